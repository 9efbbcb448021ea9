// Package hosttest holds the root-gated host tests of the upstream
// components built by controlplane/build.sh: a control plane (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler) on 127.0.0.1 with
// PKI from a generated machine config, and containerd + runc running the
// pause image. It is a nested module so that client-go stays out of the root
// module; the tests skip with a reason when the binaries are not built.
package hosttest
