// Package kubeproxy pins upstream kube-proxy (k8s.io/kubernetes/cmd/kube-proxy at the
// same version as the kube module) for one purpose: the anchor of the eBPF service
// proxy's benchmark (tools/bench/proxy). Kiln nodes do not ship it. It is its own
// module so that kube-proxy's extra dependencies (nftables, ipvs, netlink) do not
// change the kube module's pins, and with them the cache key of the kube build.
//
//	controlplane/build.sh kube-proxy
package kubeproxy
