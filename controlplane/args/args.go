// Package args builds the command lines and configuration files of the
// upstream components on a Kiln node (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet) from a parsed machine
// config, the node's identity and the paths of its files. It is pure: it
// computes flags and file contents, and the node's services write and run
// them.
package args

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kiln-os/kiln/controlplane/pki"
	"github.com/kiln-os/kiln/machined/config"
)

// Default ports.
const (
	EtcdClientPort  = 2379
	EtcdPeerPort    = 2380
	EtcdMetricsPort = 2381
)

// ContainerdSocket is where containerd listens on a node.
const ContainerdSocket = "/run/containerd/containerd.sock"

// Paths locates the files the components read and write.
type Paths struct {
	// PKI is the directory pki.Set.WriteDir wrote (certificates, keys and
	// kubeconfigs).
	PKI string
	// Config holds the generated configuration files
	// (EncryptionConfiguration, KubeletConfiguration).
	Config string
	// EtcdData is etcd's data directory.
	EtcdData string
	// KubeletRoot is kubelet's --root-dir.
	KubeletRoot string
	// ContainerdSocket is the CRI endpoint's socket path.
	ContainerdSocket string
}

// NodePaths are the paths on a Kiln node: generated files on tmpfs under
// /etc (rebuilt at every boot), state on EPHEMERAL under /var.
var NodePaths = Paths{
	PKI:              "/etc/kubernetes/pki",
	Config:           "/etc/kubernetes",
	EtcdData:         "/var/lib/etcd",
	KubeletRoot:      "/var/lib/kubelet",
	ContainerdSocket: ContainerdSocket,
}

// File names under Paths.Config.
const (
	FileEncryptionConfig = "encryption-config.yaml"
	FileKubeletConfig    = "kubelet-config.yaml"
)

// Input is everything the builders read.
type Input struct {
	Config *config.Config
	Node   pki.Node
	Paths  Paths
	// APIServerPort is kube-apiserver's secure port (default 6443).
	APIServerPort int
}

func (in *Input) pki(name string) string {
	return filepath.Join(in.Paths.PKI, filepath.FromSlash(name))
}

func (in *Input) cluster() *config.ClusterSpec { return &in.Config.Machine.Cluster }

func (in *Input) apiPort() int {
	if in.APIServerPort == 0 {
		return pki.DefaultAPIServerPort
	}
	return in.APIServerPort
}

func (in *Input) check() error {
	if in.Config == nil || in.Config.Machine == nil {
		return errors.New("args: no machine config")
	}
	if in.Node.Name == "" || len(in.Node.IPs) == 0 {
		return errors.New("args: node name and IPs are required")
	}
	return nil
}

// Flags is a command line as flag name (without dashes) → value.
type Flags map[string]string

// Args returns --name=value arguments sorted by name: stable for golden
// files and for deciding whether a service must restart.
func (f Flags) Args() []string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]string, 0, len(names))
	for _, n := range names {
		out = append(out, "--"+n+"="+f[n])
	}
	return out
}

// merge sets every extra flag, replacing a built one of the same name. Names
// may be given with or without leading dashes.
func (f Flags) merge(extra map[string]string) {
	for k, v := range extra {
		f[strings.TrimLeft(k, "-")] = v
	}
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// urlHost formats an address for a URL (IPv6 in brackets).
func urlHost(ip netip.Addr, port int) string {
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// SelectNodeIPs returns the addresses that kubelet and etcd announce: those
// in validSubnets (machine.kubelet.nodeIP.validSubnets) when given, else
// every global unicast address; at most one per IP family, IPv4 first.
func SelectNodeIPs(addrs []netip.Addr, validSubnets []string) ([]netip.Addr, error) {
	var subnets []netip.Prefix
	for i, s := range validSubnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("machine.kubelet.nodeIP.validSubnets[%d]: %q is not a CIDR", i, s)
		}
		subnets = append(subnets, p)
	}
	var v4, v6 netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if len(subnets) > 0 {
			if !slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(a) }) {
				continue
			}
		} else if !a.IsGlobalUnicast() {
			continue
		}
		if a.Is4() && !v4.IsValid() {
			v4 = a
		} else if a.Is6() && !v6.IsValid() {
			v6 = a
		}
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no address qualifies as node IP (see machine.kubelet.nodeIP.validSubnets)")
	}
	return out, nil
}

// ClusterDNSIPs returns the CoreDNS Service IPs: the tenth address of each
// service subnet (10.96.0.10 in the default 10.96.0.0/12), as kubeadm does.
func ClusterDNSIPs(serviceSubnets []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for i, s := range serviceSubnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("cluster.network.serviceSubnets[%d]: %q is not a CIDR", i, s)
		}
		ip := p.Masked().Addr()
		for range 10 {
			ip = ip.Next()
		}
		if !p.Contains(ip) {
			return nil, fmt.Errorf("cluster.network.serviceSubnets[%d]: %q is too small for a DNS Service IP", i, s)
		}
		out = append(out, ip)
	}
	return out, nil
}
