package args

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-os/kiln/controlplane/pki"
)

// CgroupDriver is the kubelet's and runc's cgroup driver. A Kiln node has no
// systemd, so the kubelet and runc manage cgroup v2 directly (cgroupfs);
// containerd's runc options must not set SystemdCgroup.
const CgroupDriver = "cgroupfs"

// ControlPlaneTaint keeps ordinary workloads off controlplane nodes unless
// cluster.allowSchedulingOnControlPlanes is set.
const ControlPlaneTaint = "node-role.kubernetes.io/control-plane"

// Kubelet returns the kubelet's flags. Everything that the
// KubeletConfiguration can carry is in KubeletConfig; the flags are what it
// cannot: identity, kubeconfigs, node IPs and labels. machine.kubelet.extraArgs
// are applied last and win.
func Kubelet(in Input) (Flags, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	f := Flags{
		"config":            filepath.Join(in.Paths.Config, FileKubeletConfig),
		"kubeconfig":        in.pki(pki.FileKubeletConf),
		"root-dir":          in.Paths.KubeletRoot,
		"cert-dir":          filepath.Join(in.Paths.KubeletRoot, "pki"),
		"hostname-override": in.Node.Name,
		"node-ip":           join(in.Node.IPs),
	}
	if !in.Config.IsControlPlane() {
		// A worker joins with the bootstrap token; the kubelet writes
		// kubelet.conf itself once its CSR is signed.
		f["bootstrap-kubeconfig"] = in.pki(pki.FileBootstrapKubeletConf)
	}
	k := in.Config.Machine.Machine.Kubelet
	if len(k.NodeLabels) > 0 {
		var labels []string
		for _, key := range slices.Sorted(maps.Keys(k.NodeLabels)) {
			labels = append(labels, key+"="+k.NodeLabels[key])
		}
		f["node-labels"] = strings.Join(labels, ",")
	}
	f.merge(k.ExtraArgs)
	return f, nil
}

// taint is a v1.Taint as the KubeletConfiguration spells it.
type taint struct {
	Key    string `yaml:"key"`
	Value  string `yaml:"value,omitempty"`
	Effect string `yaml:"effect"`
}

// kubeletConfiguration is the part of kubelet.config.k8s.io/v1beta1 Kiln
// sets (client-go is not imported: this package stays light).
type kubeletConfiguration struct {
	APIVersion     string `yaml:"apiVersion"`
	Kind           string `yaml:"kind"`
	Authentication struct {
		Anonymous struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"anonymous"`
		Webhook struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"webhook"`
		X509 struct {
			ClientCAFile string `yaml:"clientCAFile"`
		} `yaml:"x509"`
	} `yaml:"authentication"`
	Authorization struct {
		Mode string `yaml:"mode"`
	} `yaml:"authorization"`
	CgroupDriver             string   `yaml:"cgroupDriver"`
	FailCgroupV1             bool     `yaml:"failCgroupV1"`
	ProtectKernelDefaults    bool     `yaml:"protectKernelDefaults"`
	ClusterDNS               []string `yaml:"clusterDNS"`
	ClusterDomain            string   `yaml:"clusterDomain"`
	ContainerRuntimeEndpoint string   `yaml:"containerRuntimeEndpoint"`
	StaticPodPath            string   `yaml:"staticPodPath"`
	RotateCertificates       bool     `yaml:"rotateCertificates"`
	TLSCertFile              string   `yaml:"tlsCertFile,omitempty"`
	TLSPrivateKeyFile        string   `yaml:"tlsPrivateKeyFile,omitempty"`
	ReadOnlyPort             int      `yaml:"readOnlyPort"`
	HealthzBindAddress       string   `yaml:"healthzBindAddress"`
	RegisterWithTaints       []taint  `yaml:"registerWithTaints,omitempty"`
}

// KubeletConfig returns the KubeletConfiguration YAML: cgroup v2 only
// (failCgroupV1), cgroupfs driver, protectKernelDefaults (machined sets the
// sysctls the kubelet wants; the kubelet must not rewrite host sysctls), no
// static pods (machined runs the control plane as processes), webhook
// authentication and authorization against the apiserver, the cluster DNS
// Service IPs and, on controlplane nodes, the serving certificate from
// package pki and the control-plane taint.
func KubeletConfig(in Input) ([]byte, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	cl := in.cluster()
	dns, err := ClusterDNSIPs(cl.Network.ServiceSubnets)
	if err != nil {
		return nil, err
	}
	k := kubeletConfiguration{
		APIVersion:               "kubelet.config.k8s.io/v1beta1",
		Kind:                     "KubeletConfiguration",
		CgroupDriver:             CgroupDriver,
		FailCgroupV1:             true,
		ProtectKernelDefaults:    true,
		ClusterDomain:            strings.TrimSuffix(cl.Network.DNSDomain, "."),
		ContainerRuntimeEndpoint: "unix://" + in.Paths.ContainerdSocket,
		StaticPodPath:            "",
		RotateCertificates:       true,
		ReadOnlyPort:             0,
		HealthzBindAddress:       "127.0.0.1",
	}
	for _, ip := range dns {
		k.ClusterDNS = append(k.ClusterDNS, ip.String())
	}
	k.Authentication.Webhook.Enabled = true
	k.Authentication.X509.ClientCAFile = in.pki(pki.FileCACrt)
	k.Authorization.Mode = "Webhook"
	if in.Config.IsControlPlane() {
		k.TLSCertFile = in.pki(pki.FileKubeletServerCrt)
		k.TLSPrivateKeyFile = in.pki(pki.FileKubeletServerKey)
		if !cl.AllowSchedulingOnControlPlanes {
			k.RegisterWithTaints = append(k.RegisterWithTaints, taint{Key: ControlPlaneTaint, Effect: "NoSchedule"})
		}
	}
	taints := in.Config.Machine.Machine.Kubelet.NodeTaints
	for _, key := range slices.Sorted(maps.Keys(taints)) {
		t := taint{Key: key, Effect: taints[key]}
		if v, e, ok := strings.Cut(taints[key], ":"); ok {
			t.Value, t.Effect = v, e
		}
		k.RegisterWithTaints = append(k.RegisterWithTaints, t)
	}
	out, err := yaml.Marshal(&k)
	if err != nil {
		return nil, fmt.Errorf("marshal KubeletConfiguration: %w", err)
	}
	return out, nil
}
