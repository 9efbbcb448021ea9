// Package pki generates every leaf certificate, key and kubeconfig that the
// Kubernetes control plane and the kubelet of a Kiln node need, from the
// cluster secrets of a parsed machine config (Kubernetes, etcd and
// front-proxy CAs, service-account key, bootstrap token), and writes them
// atomically to a directory.
//
// The layout follows kubeadm's /etc/kubernetes/pki, so that upstream
// documentation applies: ca.crt, apiserver.crt, etcd/server.crt,
// front-proxy-client.crt, sa.key, admin.conf, ... (see the File* constants).
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/secrets"
)

// LeafValidity is how long generated leaf certificates are valid. A node
// regenerates them from the CAs at every start, so one year is plenty.
const LeafValidity = 365 * 24 * time.Hour

// DefaultAPIServerPort is the port kube-apiserver listens on.
const DefaultAPIServerPort = 6443

// File names, relative to the PKI directory.
const (
	FileCACrt                   = "ca.crt"
	FileCAKey                   = "ca.key"
	FileAPIServerCrt            = "apiserver.crt"
	FileAPIServerKey            = "apiserver.key"
	FileAPIServerKubeletCrt     = "apiserver-kubelet-client.crt"
	FileAPIServerKubeletKey     = "apiserver-kubelet-client.key"
	FileAPIServerEtcdCrt        = "apiserver-etcd-client.crt"
	FileAPIServerEtcdKey        = "apiserver-etcd-client.key"
	FileFrontProxyCACrt         = "front-proxy-ca.crt"
	FileFrontProxyClientCrt     = "front-proxy-client.crt"
	FileFrontProxyClientKey     = "front-proxy-client.key"
	FileServiceAccountKey       = "sa.key"
	FileServiceAccountPub       = "sa.pub"
	FileEtcdCACrt               = "etcd/ca.crt"
	FileEtcdServerCrt           = "etcd/server.crt"
	FileEtcdServerKey           = "etcd/server.key"
	FileEtcdPeerCrt             = "etcd/peer.crt"
	FileEtcdPeerKey             = "etcd/peer.key"
	FileEtcdHealthcheckCrt      = "etcd/healthcheck-client.crt"
	FileEtcdHealthcheckKey      = "etcd/healthcheck-client.key"
	FileKubeletServerCrt        = "kubelet.crt"
	FileKubeletServerKey        = "kubelet.key"
	FileAdminConf               = "admin.conf"
	FileControllerManagerConf   = "controller-manager.conf"
	FileSchedulerConf           = "scheduler.conf"
	FileKubeletConf             = "kubelet.conf"
	FileBootstrapKubeletConf    = "bootstrap-kubelet.conf"
	fileModeSecret, fileModePub = 0o600, 0o644
)

// Node is what the certificates say about the node they are for.
type Node struct {
	// Name is the node name (the kubelet's system:node:<name> identity and
	// a SAN of the serving certificates). Required.
	Name string
	// IPs are the node's addresses; every one is a SAN of the apiserver,
	// etcd and kubelet serving certificates. At least one is required.
	IPs []netip.Addr
}

// Options tune Generate; the zero value is the node default.
type Options struct {
	// APIServerPort is the port of the local kube-apiserver that
	// controller-manager and scheduler reach on 127.0.0.1 (default 6443).
	APIServerPort int
	// Now is the issue time (default time.Now); tests pin it.
	Now func() time.Time
}

// File is one generated file.
type File struct {
	// Path is relative to the PKI directory, with / separators.
	Path string
	// Data is the content (PEM or kubeconfig YAML).
	Data []byte
	// Secret files hold private keys or tokens and are written 0600.
	Secret bool
}

// Set is a generated PKI: files in a fixed order.
type Set struct {
	Files []File
}

// Get returns the file at path, or nil.
func (s *Set) Get(path string) []byte {
	for _, f := range s.Files {
		if f.Path == path {
			return f.Data
		}
	}
	return nil
}

func (s *Set) add(path string, data []byte, secret bool) {
	s.Files = append(s.Files, File{Path: path, Data: data, Secret: secret})
}

func (s *Set) addPair(crtPath, keyPath string, kp *secrets.KeyPair) {
	s.add(crtPath, kp.Crt, false)
	s.add(keyPath, kp.Key, true)
}

// cluster is the part of the machine config Generate reads, decoded.
type cluster struct {
	name          string
	endpoint      *url.URL
	domain        string
	serviceIPs    []netip.Addr // first IP of each service subnet
	certSANs      []string
	ca            *secrets.KeyPair // key nil on workers
	etcdCA        *secrets.KeyPair
	frontProxyCA  *secrets.KeyPair
	saKey         []byte
	token         string
	controlPlane  bool
	localAPIPort  int
	issuedAt      time.Time
	node          Node
	nodeIPStrings []string
}

// Generate builds the PKI of node from cfg: on a controlplane node every
// control-plane certificate and kubeconfig plus a kubelet client kubeconfig
// signed directly by the cluster CA; on a worker (no CA key) the CA
// certificate and a bootstrap-token kubeconfig for the kubelet.
func Generate(cfg *config.Config, node Node, opts Options) (*Set, error) {
	c, err := newCluster(cfg, node, opts)
	if err != nil {
		return nil, err
	}
	s := &Set{}
	s.add(FileCACrt, c.ca.Crt, false)
	if !c.controlPlane {
		conf, err := kubeconfig(c.name, c.endpoint.String(), c.ca.Crt, "kubelet-bootstrap", credentials{token: c.token})
		if err != nil {
			return nil, err
		}
		s.add(FileBootstrapKubeletConf, conf, true)
		return s, nil
	}
	if err := c.controlPlaneFiles(s); err != nil {
		return nil, err
	}
	return s, nil
}

func newCluster(cfg *config.Config, node Node, opts Options) (*cluster, error) {
	if cfg == nil || cfg.Machine == nil {
		return nil, errors.New("pki: no machine config")
	}
	if node.Name == "" {
		return nil, errors.New("pki: node name is empty")
	}
	if len(node.IPs) == 0 {
		return nil, errors.New("pki: node has no IP address")
	}
	cl := cfg.Machine.Cluster
	c := &cluster{
		name:         cl.Name,
		domain:       cl.Network.DNSDomain,
		certSANs:     cfg.Machine.Machine.CertSANs,
		token:        cl.Token,
		controlPlane: cfg.IsControlPlane(),
		localAPIPort: opts.APIServerPort,
		node:         node,
	}
	if c.localAPIPort == 0 {
		c.localAPIPort = DefaultAPIServerPort
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	c.issuedAt = now()
	for _, ip := range node.IPs {
		c.nodeIPStrings = append(c.nodeIPStrings, ip.String())
	}
	if c.domain == "" {
		c.domain = config.DefaultDNSDomain
	}
	var err error
	if c.endpoint, err = cfg.Endpoint(); err != nil {
		return nil, err
	}
	if c.endpoint.Hostname() == "" {
		return nil, fmt.Errorf("cluster.controlPlane.endpoint: %q has no host", cl.ControlPlane.Endpoint)
	}
	for i, sub := range cl.Network.ServiceSubnets {
		ip, err := FirstServiceIP(sub)
		if err != nil {
			return nil, fmt.Errorf("cluster.network.serviceSubnets[%d]: %w", i, err)
		}
		c.serviceIPs = append(c.serviceIPs, ip)
	}
	if c.ca, err = keyPair("cluster.ca", cl.CA); err != nil {
		return nil, err
	}
	if !c.controlPlane {
		return c, nil
	}
	if c.ca.Key == nil {
		return nil, errors.New("cluster.ca.key: missing on a controlplane node")
	}
	if c.etcdCA, err = keyPair("cluster.etcd.ca", cl.Etcd.CA); err != nil {
		return nil, err
	}
	if c.frontProxyCA, err = keyPair("cluster.aggregatorCA", cl.AggregatorCA); err != nil {
		return nil, err
	}
	for _, kp := range []struct {
		path string
		kp   *secrets.KeyPair
	}{{"cluster.etcd.ca.key", c.etcdCA}, {"cluster.aggregatorCA.key", c.frontProxyCA}} {
		if kp.kp.Key == nil {
			return nil, fmt.Errorf("%s: missing on a controlplane node", kp.path)
		}
	}
	saKey := config.CertAndKey{Key: cl.ServiceAccount.Key}
	if c.saKey, err = saKey.KeyPEM(); err != nil {
		return nil, fmt.Errorf("cluster.serviceAccount.key: %w", err)
	}
	if c.saKey == nil {
		return nil, errors.New("cluster.serviceAccount.key: missing on a controlplane node")
	}
	return c, nil
}

// keyPair decodes a CA of the machine config; the key may be absent.
func keyPair(path string, ck config.CertAndKey) (*secrets.KeyPair, error) {
	crt, err := ck.CrtPEM()
	if err != nil {
		return nil, fmt.Errorf("%s.crt: %w", path, err)
	}
	key, err := ck.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("%s.key: %w", path, err)
	}
	kp := &secrets.KeyPair{Crt: crt, Key: key}
	if _, err := kp.Certificate(); err != nil {
		return nil, fmt.Errorf("%s.crt: %w", path, err)
	}
	return kp, nil
}

// FirstServiceIP returns the first usable address of a service subnet: the
// ClusterIP of the kubernetes Service, which must be in the apiserver's
// certificate.
func FirstServiceIP(subnet string) (netip.Addr, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not a CIDR: %w", subnet, err)
	}
	ip := p.Masked().Addr().Next()
	if !ip.IsValid() || !p.Contains(ip) {
		return netip.Addr{}, fmt.Errorf("%q has no usable address", subnet)
	}
	return ip, nil
}

var (
	serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	bothAuth   = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// Kubernetes identities of the generated client certificates.
const (
	CNAdmin             = "kubernetes-admin"
	CNControllerManager = "system:kube-controller-manager"
	CNScheduler         = "system:kube-scheduler"
	CNAPIServerKubelet  = "kube-apiserver-kubelet-client"
	CNAPIServerEtcd     = "kube-apiserver-etcd-client"
	CNFrontProxyClient  = "front-proxy-client"
	OrgMasters          = "system:masters"
	OrgNodes            = "system:nodes"
)

func (c *cluster) controlPlaneFiles(s *Set) error {
	s.add(FileCAKey, c.ca.Key, true)

	apiSANs := c.apiServerSANs()
	etcdSANs := dedupe(append([]string{"localhost", "127.0.0.1", "::1", c.node.Name}, c.nodeIPStrings...))
	kubeletSANs := dedupe(append([]string{c.node.Name}, c.nodeIPStrings...))

	for _, l := range []struct {
		crt, key string
		ca       *secrets.KeyPair
		spec     leaf
	}{
		{FileAPIServerCrt, FileAPIServerKey, c.ca, leaf{cn: "kube-apiserver", usages: serverAuth, sans: apiSANs}},
		// system:masters rather than an RBAC binding: the apiserver must
		// reach every kubelet before any RBAC object exists.
		{FileAPIServerKubeletCrt, FileAPIServerKubeletKey, c.ca, leaf{cn: CNAPIServerKubelet, org: []string{OrgMasters}, usages: clientAuth}},
		{FileAPIServerEtcdCrt, FileAPIServerEtcdKey, c.etcdCA, leaf{cn: CNAPIServerEtcd, usages: clientAuth}},
		{FileFrontProxyClientCrt, FileFrontProxyClientKey, c.frontProxyCA, leaf{cn: CNFrontProxyClient, usages: clientAuth}},
		{FileEtcdServerCrt, FileEtcdServerKey, c.etcdCA, leaf{cn: c.node.Name, usages: bothAuth, sans: etcdSANs}},
		{FileEtcdPeerCrt, FileEtcdPeerKey, c.etcdCA, leaf{cn: c.node.Name, usages: bothAuth, sans: etcdSANs}},
		{FileEtcdHealthcheckCrt, FileEtcdHealthcheckKey, c.etcdCA, leaf{cn: "kube-etcd-healthcheck-client", usages: clientAuth}},
		{FileKubeletServerCrt, FileKubeletServerKey, c.ca, leaf{cn: c.node.Name, usages: serverAuth, sans: kubeletSANs}},
	} {
		kp, err := issue(l.ca, l.spec, c.issuedAt)
		if err != nil {
			return fmt.Errorf("%s: %w", l.crt, err)
		}
		s.addPair(l.crt, l.key, kp)
	}
	s.add(FileFrontProxyCACrt, c.frontProxyCA.Crt, false)
	s.add(FileEtcdCACrt, c.etcdCA.Crt, false)

	saPub, err := publicKeyPEM(c.saKey)
	if err != nil {
		return fmt.Errorf("cluster.serviceAccount.key: %w", err)
	}
	s.add(FileServiceAccountKey, c.saKey, true)
	s.add(FileServiceAccountPub, saPub, false)

	local := (&url.URL{Scheme: "https", Host: net.JoinHostPort("127.0.0.1", fmt.Sprint(c.localAPIPort))}).String()
	for _, k := range []struct {
		path, server string
		spec         leaf
	}{
		{FileAdminConf, c.endpoint.String(), leaf{cn: CNAdmin, org: []string{OrgMasters}, usages: clientAuth}},
		{FileControllerManagerConf, local, leaf{cn: CNControllerManager, usages: clientAuth}},
		{FileSchedulerConf, local, leaf{cn: CNScheduler, usages: clientAuth}},
		// The kubelet of a controlplane node reaches its own apiserver, so
		// it starts even when the endpoint is a load balancer not yet up.
		{FileKubeletConf, local, leaf{cn: "system:node:" + c.node.Name, org: []string{OrgNodes}, usages: clientAuth}},
	} {
		kp, err := issue(c.ca, k.spec, c.issuedAt)
		if err != nil {
			return fmt.Errorf("%s: %w", k.path, err)
		}
		conf, err := kubeconfig(c.name, k.server, c.ca.Crt, k.spec.cn, credentials{crt: kp.Crt, key: kp.Key})
		if err != nil {
			return fmt.Errorf("%s: %w", k.path, err)
		}
		s.add(k.path, conf, true)
	}
	return nil
}

// apiServerSANs lists the names the apiserver answers to: node names and
// IPs, the kubernetes Service's ClusterIPs and DNS names, the endpoint host,
// loopback and the configured extra SANs.
func (c *cluster) apiServerSANs() []string {
	sans := []string{c.node.Name, "localhost", "127.0.0.1", "::1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + strings.TrimSuffix(c.domain, "."),
		c.endpoint.Hostname()}
	sans = append(sans, c.nodeIPStrings...)
	for _, ip := range c.serviceIPs {
		sans = append(sans, ip.String())
	}
	sans = append(sans, c.certSANs...)
	return dedupe(sans)
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
