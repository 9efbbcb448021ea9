package serviceproxy

// The BPF objects are built for the little-endian BPF target (amd64 and arm64 nodes)
// with clang-19; the generated {sock,tc}_bpfel.go and .o files are committed so that
// builds and tests need no clang.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -type svc_key -type svc_val -type slot_key -type backend -type revnat_key -type revnat_val -type affinity_key -type affinity_val sock bpf/sock.c -- -I./bpf/include -O2 -g -Wall -Werror
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -type fe_val -type link_cfg -type node_addr -type ct_key -type ct_val -type ct6_key -type ct6_val -type tc_affinity_key -type maglev_val tc bpf/tc.c -- -I./bpf/include -O2 -g -Wall -Werror
