package config

import (
	"fmt"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// APIVersion is the only apiVersion this package accepts.
const APIVersion = "kiln.dev/v1alpha1"

// Document kinds.
const (
	KindMachineConfig = "MachineConfig"
	KindServiceConfig = "ServiceConfig"
)

// MachineType is the role of a node in the cluster.
type MachineType string

// Machine types.
const (
	TypeControlPlane MachineType = "controlplane"
	TypeWorker       MachineType = "worker"
)

// Proxy modes.
const (
	ProxyModeEBPF     = "ebpf"
	ProxyModeDisabled = "disabled"
)

// File operations.
const (
	FileOpCreate    = "create"
	FileOpAppend    = "append"
	FileOpOverwrite = "overwrite"
)

// RestartPolicy says when machined restarts an extension service.
type RestartPolicy string

// Restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// MachineConfig is the main document of a machine config: how this node is
// set up and which cluster it belongs to.
type MachineConfig struct {
	// Always kiln.dev/v1alpha1.
	APIVersion string `yaml:"apiVersion" jsonschema:"required,enum=kiln.dev/v1alpha1"`
	// Always MachineConfig.
	Kind string `yaml:"kind" jsonschema:"required,enum=MachineConfig"`
	// Settings of this node.
	Machine MachineSpec `yaml:"machine" jsonschema:"required"`
	// Settings shared by every node of the cluster.
	Cluster ClusterSpec `yaml:"cluster" jsonschema:"required"`
}

// MachineSpec configures this node.
type MachineSpec struct {
	// Role of the node: controlplane (runs etcd and the Kubernetes control
	// plane, and kubelet) or worker (runs kubelet only).
	Type MachineType `yaml:"type" jsonschema:"required,enum=controlplane,enum=worker"`
	// Host name of the node, also its Kubernetes node name: a lowercase RFC
	// 1123 host name. Empty means a name derived from the network (DHCP) or
	// the machine ID.
	Hostname string `yaml:"hostname,omitempty"`
	// Machine join token: the shared secret with which a node asks the
	// control plane for its certificates.
	Token string `yaml:"token" jsonschema:"required"`
	// Machine API CA: clients of the machine API (kctl) and nodes present
	// certificates signed by it. The key is required on controlplane nodes
	// and should be absent on workers.
	CA CertAndKey `yaml:"ca" jsonschema:"required"`
	// Extra DNS names and IP addresses for the certificates of the machine
	// API and of the Kubernetes API server.
	CertSANs []string `yaml:"certSANs,omitempty"`
	// Where and how the node is installed to disk.
	Install InstallConfig `yaml:"install,omitempty"`
	// Host network: interfaces, addresses, routes, DNS.
	Network NetworkConfig `yaml:"network,omitempty"`
	// Time synchronisation (NTP).
	Time TimeConfig `yaml:"time,omitempty"`
	// Settings of the kubelet on this node.
	Kubelet KubeletConfig `yaml:"kubelet,omitempty"`
	// Kernel parameters set at boot and on every apply, e.g.
	// net.ipv4.ip_forward: "1".
	Sysctls map[string]string `yaml:"sysctls,omitempty"`
	// Files machined writes under /var or /etc.
	Files []FileConfig `yaml:"files,omitempty"`
	// Extra kernel command-line arguments, used from the next installation
	// or upgrade on.
	KernelArgs []string `yaml:"kernelArgs,omitempty"`
}

// CertAndKey is a certificate authority: a certificate and its private key,
// each the base64 encoding of PEM text.
type CertAndKey struct {
	// CA certificate, base64 of PEM.
	Crt string `yaml:"crt,omitempty"`
	// CA private key, base64 of PEM (PKCS#8, SEC 1 or PKCS#1). Secret.
	Key string `yaml:"key,omitempty"`
}

// InstallConfig says where the node is installed.
type InstallConfig struct {
	// Disk to install to, a device path such as /dev/vda. Empty means the
	// node keeps running from its boot medium.
	Disk string `yaml:"disk,omitempty"`
	// Wipe the whole disk before installing, not only the Kiln partitions.
	Wipe bool `yaml:"wipe,omitempty"`
}

// NetworkConfig configures the host network.
type NetworkConfig struct {
	// Network interfaces to configure. Links not listed are left as they
	// are: machined neither configures nor takes down what the config does
	// not name.
	Interfaces []InterfaceConfig `yaml:"interfaces,omitempty"`
	// DNS servers (IP addresses), in order of preference. Empty means those
	// learnt from DHCP.
	Nameservers []string `yaml:"nameservers,omitempty"`
	// Extra entries for /etc/hosts.
	ExtraHosts []ExtraHost `yaml:"extraHosts,omitempty"`
}

// InterfaceConfig configures one network interface, selected either by name
// (interface) or by hardware (deviceSelector); exactly one of the two.
type InterfaceConfig struct {
	// Name of the interface, such as eth0.
	Interface string `yaml:"interface,omitempty"`
	// Selects the interface by its hardware instead of its name.
	DeviceSelector *DeviceSelector `yaml:"deviceSelector,omitempty"`
	// Obtain an IPv4 address, routes and DNS servers by DHCP. Static
	// addresses may be given as well.
	DHCP bool `yaml:"dhcp,omitempty"`
	// Configure IPv6 from the network: accept Router Advertisements (the
	// default route, and an address by SLAAC where the prefix allows it)
	// and obtain an address and DNS servers by DHCPv6. Static addresses
	// may be given as well.
	DHCP6 bool `yaml:"dhcp6,omitempty"`
	// Static addresses in CIDR notation, e.g. 10.0.0.2/24 or fd00::2/64.
	Addresses []string `yaml:"addresses,omitempty"`
	// Static routes through this interface.
	Routes []Route `yaml:"routes,omitempty"`
	// MTU of the interface (68-65535). 0 keeps the driver's default.
	MTU int `yaml:"mtu,omitempty"`
	// VLANs on top of this interface.
	VLANs []VLANConfig `yaml:"vlans,omitempty"`
	// Keep the interface administratively down; it gets no addresses,
	// routes, DHCP or VLANs.
	Down bool `yaml:"down,omitempty"`
	// Makes this interface a bond of other interfaces, which machined
	// creates under the name given by interface (e.g. bond0).
	Bond *BondConfig `yaml:"bond,omitempty"`
}

// BondConfig configures a bond (Linux bonding driver).
type BondConfig struct {
	// Bonding mode: active-backup (one member carries the traffic, another
	// takes over when its link fails) or 802.3ad (LACP; the switch must
	// agree).
	Mode string `yaml:"mode" jsonschema:"required,enum=active-backup,enum=802.3ad"`
	// Member interfaces by name; at least one. A member must not be
	// configured with addresses, routes, DHCP or VLANs of its own.
	Interfaces []string `yaml:"interfaces" jsonschema:"required"`
}

// Bond modes.
const (
	BondActiveBackup = "active-backup"
	Bond8023AD       = "802.3ad"
)

// DeviceSelector selects a network interface by its hardware.
type DeviceSelector struct {
	// Permanent MAC address of the interface, e.g. 52:54:00:12:34:56.
	HardwareAddr string `yaml:"hardwareAddr,omitempty"`
	// Kernel driver of the interface, e.g. virtio_net or e1000e. With a
	// hardware address as well, both must match; alone, the first matching
	// interface (by index) is taken.
	Driver string `yaml:"driver,omitempty"`
}

// Route is a static route.
type Route struct {
	// Destination in CIDR notation; 0.0.0.0/0 or ::/0 for a default route.
	Network string `yaml:"network" jsonschema:"required"`
	// Next hop. Empty means the destination is on the link.
	Gateway string `yaml:"gateway,omitempty"`
	// Preferred source address of packets using this route.
	Source string `yaml:"source,omitempty"`
	// Route metric (priority); lower wins. 0 means the kernel default.
	Metric uint32 `yaml:"metric,omitempty"`
}

// VLANConfig configures a VLAN interface on top of its parent interface.
type VLANConfig struct {
	// VLAN ID, 1-4094.
	VLANID int `yaml:"vlanId" jsonschema:"required"`
	// Obtain an IPv4 address by DHCP on the VLAN.
	DHCP bool `yaml:"dhcp,omitempty"`
	// Configure IPv6 on the VLAN from Router Advertisements (SLAAC) and
	// DHCPv6.
	DHCP6 bool `yaml:"dhcp6,omitempty"`
	// Static addresses in CIDR notation.
	Addresses []string `yaml:"addresses,omitempty"`
	// Static routes through the VLAN.
	Routes []Route `yaml:"routes,omitempty"`
	// MTU of the VLAN interface (68-65535). 0 keeps the parent's.
	MTU int `yaml:"mtu,omitempty"`
}

// ExtraHost is a static /etc/hosts entry.
type ExtraHost struct {
	// IP address.
	IP string `yaml:"ip" jsonschema:"required"`
	// Host names for the address.
	Aliases []string `yaml:"aliases" jsonschema:"required"`
}

// TimeConfig configures time synchronisation.
type TimeConfig struct {
	// Turn NTP off (e.g. when the hypervisor keeps the clock).
	Disabled bool `yaml:"disabled,omitempty"`
	// NTP servers, host names or IP addresses.
	Servers []string `yaml:"servers,omitempty"`
}

// KubeletConfig configures the kubelet on this node.
type KubeletConfig struct {
	// Extra kubelet flags, without the leading dashes: {max-pods: "200"}.
	ExtraArgs map[string]string `yaml:"extraArgs,omitempty"`
	// Labels the node registers with.
	NodeLabels map[string]string `yaml:"nodeLabels,omitempty"`
	// Taints the node registers with, key: "value:Effect" (or "Effect"),
	// where Effect is NoSchedule, PreferNoSchedule or NoExecute.
	NodeTaints map[string]string `yaml:"nodeTaints,omitempty"`
	// How the kubelet picks the node IP.
	NodeIP NodeIPConfig `yaml:"nodeIP,omitempty"`
}

// NodeIPConfig chooses the node IP among the host addresses.
type NodeIPConfig struct {
	// Subnets (CIDR) the node IP must lie in; the first matching host
	// address of each family wins. Empty means the address of the default
	// route.
	ValidSubnets []string `yaml:"validSubnets,omitempty"`
}

// FileConfig is a file machined writes.
type FileConfig struct {
	// Absolute path under /var or /etc.
	Path string `yaml:"path" jsonschema:"required"`
	// File content.
	Content string `yaml:"content,omitempty"`
	// Permission bits, e.g. 0o644.
	Permissions FileMode `yaml:"permissions,omitempty"`
	// create (fail if the file exists with other content), append, or
	// overwrite.
	Op string `yaml:"op,omitempty" jsonschema:"enum=create,enum=append,enum=overwrite"`
}

// FileMode is a set of Unix permission bits, written in octal (0o644).
type FileMode uint32

// MarshalYAML writes the mode in octal.
func (m FileMode) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "0o" + strconv.FormatUint(uint64(m), 8)}, nil
}

// String returns the mode in octal.
func (m FileMode) String() string { return fmt.Sprintf("0o%o", uint32(m)) }

// ClusterSpec configures the cluster this node belongs to. It is the same on
// every node, except that workers carry no CA keys.
type ClusterSpec struct {
	// Name of the cluster, a DNS label.
	Name string `yaml:"name" jsonschema:"required"`
	// Where the Kubernetes API is reached.
	ControlPlane ControlPlaneConfig `yaml:"controlPlane" jsonschema:"required"`
	// Pod and Service networks.
	Network ClusterNetworkConfig `yaml:"network,omitempty"`
	// Service proxy.
	Proxy ProxyConfig `yaml:"proxy,omitempty"`
	// Let ordinary workloads run on controlplane nodes (no NoSchedule taint).
	AllowSchedulingOnControlPlanes bool `yaml:"allowSchedulingOnControlPlanes,omitempty"`
	// Kubernetes CA. The key is required on controlplane nodes.
	CA CertAndKey `yaml:"ca" jsonschema:"required"`
	// etcd settings (controlplane only).
	Etcd EtcdConfig `yaml:"etcd,omitempty"`
	// Front-proxy CA of the API aggregation layer (controlplane only).
	AggregatorCA CertAndKey `yaml:"aggregatorCA,omitempty"`
	// Key that signs service-account tokens (controlplane only).
	ServiceAccount ServiceAccountConfig `yaml:"serviceAccount,omitempty"`
	// Kubernetes bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}; kubelets use it
	// to join. Secret.
	Token string `yaml:"token" jsonschema:"required,pattern=^[a-z0-9]{6}\\.[a-z0-9]{16}$"`
	// Key that encrypts Secrets in etcd, base64 of 32 random bytes
	// (controlplane only). Secret.
	SecretboxEncryptionSecret string `yaml:"secretboxEncryptionSecret,omitempty"`
}

// ControlPlaneConfig locates the Kubernetes API.
type ControlPlaneConfig struct {
	// URL of the Kubernetes API, https://host:port, e.g.
	// https://10.0.0.2:6443 or a load balancer in front of the control
	// plane.
	Endpoint string `yaml:"endpoint" jsonschema:"required"`
}

// ClusterNetworkConfig configures the Pod and Service networks.
type ClusterNetworkConfig struct {
	// Pod networks (CIDR), at most one per IP family.
	PodSubnets []string `yaml:"podSubnets,omitempty"`
	// Service networks (CIDR), at most one per IP family.
	ServiceSubnets []string `yaml:"serviceSubnets,omitempty"`
	// DNS domain of the cluster.
	DNSDomain string `yaml:"dnsDomain,omitempty"`
}

// ProxyConfig configures the service proxy.
type ProxyConfig struct {
	// ebpf (Kiln's eBPF service proxy) or disabled (bring your own, e.g. a
	// CNI that replaces kube-proxy).
	Mode string `yaml:"mode,omitempty" jsonschema:"enum=ebpf,enum=disabled"`
}

// EtcdConfig configures etcd.
type EtcdConfig struct {
	// etcd CA (peer and client certificates).
	CA CertAndKey `yaml:"ca,omitempty"`
}

// ServiceAccountConfig holds the service-account signing key.
type ServiceAccountConfig struct {
	// Private key, base64 of PEM (ECDSA or RSA). Secret.
	Key string `yaml:"key,omitempty"`
}

// ServiceConfig is an extension service machined supervises: a process
// started after its dependencies and restarted by policy.
type ServiceConfig struct {
	// Always kiln.dev/v1alpha1.
	APIVersion string `yaml:"apiVersion" jsonschema:"required,enum=kiln.dev/v1alpha1"`
	// Always ServiceConfig.
	Kind string `yaml:"kind" jsonschema:"required,enum=ServiceConfig"`
	// Name of the service, a DNS label, unique among services and different
	// from Kiln's own services (see ReservedServiceNames).
	Name string `yaml:"name" jsonschema:"required"`
	// Absolute path of the program.
	Command string `yaml:"command" jsonschema:"required"`
	// Arguments passed to the program.
	Args []string `yaml:"args,omitempty"`
	// Environment variables of the process.
	Environment map[string]string `yaml:"environment,omitempty"`
	// Services (extension or Kiln's own) that must be running first.
	DependsOn []string `yaml:"dependsOn,omitempty"`
	// When to restart the process: always, on-failure or never.
	Restart RestartPolicy `yaml:"restart,omitempty" jsonschema:"enum=always,enum=on-failure,enum=never"`
	// How machined decides the service is healthy. Absent means running
	// is healthy.
	HealthCheck *HealthCheck `yaml:"healthCheck,omitempty"`
}

// HealthCheck probes a service; exactly one of tcp and exec.
type HealthCheck struct {
	// Healthy when a TCP connection to host:port succeeds.
	TCP string `yaml:"tcp,omitempty"`
	// Healthy when this command (argv, absolute path first) exits 0.
	Exec []string `yaml:"exec,omitempty"`
	// Time between probes, a Go duration such as 10s.
	Interval time.Duration `yaml:"interval,omitempty"`
	// Time a probe may take, a Go duration; at most interval.
	Timeout time.Duration `yaml:"timeout,omitempty"`
}

// ReservedServiceNames are Kiln's own services. Extension services may depend
// on them but not take their names.
var ReservedServiceNames = []string{
	"apid", "containerd", "etcd", "kube-apiserver", "kube-controller-manager",
	"kube-proxy", "kube-scheduler", "kubelet", "machined", "service-proxy",
}
