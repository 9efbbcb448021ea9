// Package proxy benchmarks Kiln's eBPF service proxy side by side with its
// anchor, upstream kube-proxy v1.37.2 (iptables mode with the legacy and the
// nf_tables backend, and nftables mode), built from the pinned source by
// `controlplane/build.sh kube-proxy`.
//
// The benchmark (BenchmarkServiceProxy, root only) re-executes itself in a
// private network and mount namespace, starts etcd and kube-apiserver from the
// components build on 127.0.0.1 there, creates N Services with two endpoints
// each through client-go, and then, each in a network namespace of its own
// (and for eBPF in its own cgroup and bpffs), lets every proxy program them.
// It measures objects existing → programmed, one endpoint change → programmed
// (for eBPF the median of five, for kube-proxy one: its figures are seconds),
// and 20,000 new TCP connections (connect, 1-byte echo, close) at concurrency 1
// and 8, in turn to 1,000 Services picked at random (the same for every mode:
// iptables mode's cost depends on where a Service's rule sits in its chain, and
// kube-proxy writes the chain in a new order at every sync), next to direct
// connections to the same Services' backends. The backends live in one
// more network namespace; no traffic leaves the namespaces the benchmark made.
//
// TestAgentAgainstAPIServer (acceptance_test.go, root and $KILN_COMPONENTS only)
// is the proxy's acceptance test on the same harness: the agent and the real
// datapath against etcd and kube-apiserver, with ClusterIP, NodePort,
// LoadBalancer (externalTrafficPolicy Local) and health-check traffic between
// namespaces it makes; no kube-proxy and no iptables.
//
// The package has no non-test code; see bench_test.go.
package proxy
