package serviceproxy

// The BPF object is built for the little-endian BPF target (amd64 and arm64 nodes)
// with clang-19; the generated sock_bpfel.go and sock_bpfel.o are committed so that
// builds and tests need no clang.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -type svc_key -type svc_val -type slot_key -type backend -type revnat_key -type revnat_val -type affinity_key -type affinity_val sock bpf/sock.c -- -I./bpf/include -O2 -g -Wall -Werror
