// Package serviceproxy is Kiln's eBPF datapath for Kubernetes ClusterIP Services, in
// kube-proxy's place: socket-level load balancing at cgroup v2 hooks (connect4/6,
// sendmsg4/6, recvmsg4/6, getpeername4/6) that rewrite a Service's virtual address to a
// backend before a packet exists, and back again for the application.
//
// NodePorts, externalIPs and LoadBalancer IPs are served by TCX ingress/egress
// programs on the node's external links (bpf/tc.c, tcx.go): DNAT to a backend, an LRU
// conntrack map, SNAT to the node for remote backends under externalTrafficPolicy
// Cluster, client address kept under Local; HealthServer answers the Local
// Services' health-check node ports.
//
// The C programs live in bpf/; bpf2go (see gen.go) turns them into the committed
// {sock,tc}_bpfel.go and .o files. Proxy loads them, attaches them to one cgroup, pins
// maps and links under a bpffs directory (/sys/fs/bpf/kiln on a node) so traffic keeps
// flowing while the agent is away, replaces programs atomically with link.Update, and
// adopts the pinned maps again on the next start.
//
// Map updates follow one protocol so that the datapath never sees a slot that is not
// there: for a service, slots (id, i) for every i < count name a backend present in the
// backends map. Growing writes slots before the count, shrinking writes the count before
// removing slots, deleting removes the service before its slots, and backends are
// written before the first slot naming them and removed after the last one.
package serviceproxy
