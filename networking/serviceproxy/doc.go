// Package serviceproxy is Kiln's eBPF datapath for Kubernetes ClusterIP Services, in
// kube-proxy's place: socket-level load balancing at cgroup v2 hooks (connect4/6,
// sendmsg4/6, recvmsg4/6, getpeername4/6) that rewrite a Service's virtual address to a
// backend before a packet exists, and back again for the application.
//
// NodePorts, externalIPs and LoadBalancer IPs, IPv4 and IPv6, are served by TCX
// ingress/egress programs on the node's external links (bpf/tc.c, tcx.go): DNAT to a
// backend, an LRU conntrack map per family that follows TCP connections to their
// RST or FINs (a new SYN on an ended flow's tuple picks anew), SNAT to the node for
// remote backends under externalTrafficPolicy Cluster, client address kept under
// Local. ICMP and ICMPv6 errors about a translated flow's packet (fragmentation
// needed and Packet Too Big among them, so that path MTU discovery works across the
// translation) are translated for the flow's other side: the embedded packet
// rewritten to what that side sent, the error sent to it. HealthServer answers the
// Local Services' health-check node ports.
//
// A new flow through a frontend takes a random backend of its slot table, or with
// Config.ExternalLB = ExternalMaglev the backend that a Maglev lookup table (maglev.go:
// 1009 entries, built alike on every node from the backends' addresses) names at
// the flow's hash (client and frontend address and port, protocol; fixed seed), so
// that nodes behind an ECMP load balancer that moves a flow between them agree on
// its backend. The tables are in kiln_maglev by slot table ID, one for each
// frontend-serving slot table, written whole before the frontends that name them
// are flagged (FE_F_MAGLEV) and deleted after the last one is not.
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
//
// The first four slots of a slot table are in the value of the service (or frontend)
// that names it, so a service with up to four backends is one element, whose count and
// slots change in one atomic write; the slots map holds the rest. Backends are an array
// indexed by backend ID; a removed backend is overwritten with its address and port 0.
// The pin directory records this layout's version (kiln_layout): Open removes pinned
// configuration maps of a version whose layout it does not read, which the next Sync
// fills again, and pinned TC state maps (links, node addresses, conntrack, affinity)
// whose key or value changed.
//
// Reverse NAT for getpeername(2) and recvmsg(2) is kept with the socket
// (socket-local storage) for connected sockets, and in an LRU map by socket cookie
// for unconnected UDP ones.
package serviceproxy
