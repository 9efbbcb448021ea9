package args

import (
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-os/kiln/controlplane/pki"
)

// Etcd returns the flags of a single-member etcd on the node: clients on
// loopback and the node IPs, peers on the node IPs, TLS everywhere with the
// etcd CA, metrics on plain HTTP on loopback only.
func Etcd(in Input) (Flags, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	var clientURLs, advertiseClient, peerURLs, initialCluster []string
	clientURLs = append(clientURLs, fmt.Sprintf("https://127.0.0.1:%d", EtcdClientPort))
	for _, ip := range in.Node.IPs {
		u := "https://" + urlHost(ip, EtcdClientPort)
		if !strings.HasPrefix(u, "https://127.0.0.1:") {
			clientURLs = append(clientURLs, u)
		}
		advertiseClient = append(advertiseClient, u)
		peerURLs = append(peerURLs, "https://"+urlHost(ip, EtcdPeerPort))
		// etcd wants every advertised peer URL of the member listed.
		initialCluster = append(initialCluster, in.Node.Name+"=https://"+urlHost(ip, EtcdPeerPort))
	}
	f := Flags{
		"name":                        in.Node.Name,
		"data-dir":                    in.Paths.EtcdData,
		"listen-client-urls":          strings.Join(clientURLs, ","),
		"advertise-client-urls":       strings.Join(advertiseClient, ","),
		"listen-peer-urls":            strings.Join(peerURLs, ","),
		"initial-advertise-peer-urls": strings.Join(peerURLs, ","),
		"initial-cluster":             strings.Join(initialCluster, ","),
		"initial-cluster-state":       "new",
		"initial-cluster-token":       in.cluster().Name,
		"listen-metrics-urls":         fmt.Sprintf("http://127.0.0.1:%d", EtcdMetricsPort),
		"cert-file":                   in.pki(pki.FileEtcdServerCrt),
		"key-file":                    in.pki(pki.FileEtcdServerKey),
		"trusted-ca-file":             in.pki(pki.FileEtcdCACrt),
		"client-cert-auth":            "true",
		"peer-cert-file":              in.pki(pki.FileEtcdPeerCrt),
		"peer-key-file":               in.pki(pki.FileEtcdPeerKey),
		"peer-trusted-ca-file":        in.pki(pki.FileEtcdCACrt),
		"peer-client-cert-auth":       "true",
		"auto-compaction-retention":   "1h",
	}
	return f, nil
}

// APIServer returns kube-apiserver's flags: etcd on loopback, the PKI of
// package pki, Node and RBAC authorization with NodeRestriction, bootstrap
// tokens, and Secrets encrypted at rest by the EncryptionConfiguration
// written from EncryptionConfig.
func APIServer(in Input) (Flags, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	cl := in.cluster()
	domain := strings.TrimSuffix(cl.Network.DNSDomain, ".")
	f := Flags{
		"advertise-address":                  in.Node.IPs[0].String(),
		"secure-port":                        fmt.Sprint(in.apiPort()),
		"allow-privileged":                   "true",
		"authorization-mode":                 "Node,RBAC",
		"enable-admission-plugins":           "NodeRestriction",
		"enable-bootstrap-token-auth":        "true",
		"client-ca-file":                     in.pki(pki.FileCACrt),
		"tls-cert-file":                      in.pki(pki.FileAPIServerCrt),
		"tls-private-key-file":               in.pki(pki.FileAPIServerKey),
		"etcd-servers":                       fmt.Sprintf("https://127.0.0.1:%d", EtcdClientPort),
		"etcd-cafile":                        in.pki(pki.FileEtcdCACrt),
		"etcd-certfile":                      in.pki(pki.FileAPIServerEtcdCrt),
		"etcd-keyfile":                       in.pki(pki.FileAPIServerEtcdKey),
		"kubelet-client-certificate":         in.pki(pki.FileAPIServerKubeletCrt),
		"kubelet-client-key":                 in.pki(pki.FileAPIServerKubeletKey),
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"proxy-client-cert-file":             in.pki(pki.FileFrontProxyClientCrt),
		"proxy-client-key-file":              in.pki(pki.FileFrontProxyClientKey),
		"requestheader-client-ca-file":       in.pki(pki.FileFrontProxyCACrt),
		"requestheader-allowed-names":        pki.CNFrontProxyClient,
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"service-account-issuer":             "https://kubernetes.default.svc." + domain,
		"service-account-key-file":           in.pki(pki.FileServiceAccountPub),
		"service-account-signing-key-file":   in.pki(pki.FileServiceAccountKey),
		"service-cluster-ip-range":           strings.Join(cl.Network.ServiceSubnets, ","),
		"encryption-provider-config":         filepath.Join(in.Paths.Config, FileEncryptionConfig),
		"profiling":                          "false",
	}
	return f, nil
}

// EncryptionConfig returns the EncryptionConfiguration that encrypts Secrets
// in etcd with the cluster's secretbox key (XSalsa20-Poly1305). identity
// stays last so that Secrets written before encryption remain readable.
func EncryptionConfig(in Input) ([]byte, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	secret := in.cluster().SecretboxEncryptionSecret
	key, err := base64.StdEncoding.DecodeString(secret)
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("cluster.secretboxEncryptionSecret: want base64 of 32 bytes")
	}
	type named struct {
		Name   string `yaml:"name"`
		Secret string `yaml:"secret"`
	}
	type provider struct {
		Secretbox *struct {
			Keys []named `yaml:"keys"`
		} `yaml:"secretbox,omitempty"`
		Identity *struct{} `yaml:"identity,omitempty"`
	}
	sb := provider{Secretbox: &struct {
		Keys []named `yaml:"keys"`
	}{Keys: []named{{Name: "key1", Secret: secret}}}}
	doc := struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Resources  []struct {
			Resources []string   `yaml:"resources"`
			Providers []provider `yaml:"providers"`
		} `yaml:"resources"`
	}{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"}
	doc.Resources = append(doc.Resources, struct {
		Resources []string   `yaml:"resources"`
		Providers []provider `yaml:"providers"`
	}{Resources: []string{"secrets"}, Providers: []provider{sb, {Identity: &struct{}{}}}})
	return yaml.Marshal(&doc)
}

// ControllerManager returns kube-controller-manager's flags: it signs
// kubelet certificates with the cluster CA, allocates each node a pod CIDR
// from the pod subnets (the bridge CNI routes them) and runs the bootstrap
// token controllers.
func ControllerManager(in Input) (Flags, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	cl := in.cluster()
	conf := in.pki(pki.FileControllerManagerConf)
	return Flags{
		"kubeconfig":                       conf,
		"authentication-kubeconfig":        conf,
		"authorization-kubeconfig":         conf,
		"bind-address":                     "127.0.0.1",
		"client-ca-file":                   in.pki(pki.FileCACrt),
		"requestheader-client-ca-file":     in.pki(pki.FileFrontProxyCACrt),
		"cluster-name":                     cl.Name,
		"cluster-signing-cert-file":        in.pki(pki.FileCACrt),
		"cluster-signing-key-file":         in.pki(pki.FileCAKey),
		"root-ca-file":                     in.pki(pki.FileCACrt),
		"service-account-private-key-file": in.pki(pki.FileServiceAccountKey),
		"use-service-account-credentials":  "true",
		"controllers":                      "*,bootstrapsigner,tokencleaner",
		"leader-elect":                     "true",
		"allocate-node-cidrs":              "true",
		"cluster-cidr":                     strings.Join(cl.Network.PodSubnets, ","),
		"service-cluster-ip-range":         strings.Join(cl.Network.ServiceSubnets, ","),
		"configure-cloud-routes":           "false",
		"profiling":                        "false",
	}, nil
}

// Scheduler returns kube-scheduler's flags.
func Scheduler(in Input) (Flags, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	conf := in.pki(pki.FileSchedulerConf)
	return Flags{
		"kubeconfig":                conf,
		"authentication-kubeconfig": conf,
		"authorization-kubeconfig":  conf,
		"bind-address":              "127.0.0.1",
		"leader-elect":              "true",
		"profiling":                 "false",
	}, nil
}
