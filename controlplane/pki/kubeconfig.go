package pki

import (
	"encoding/base64"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// credentials of a kubeconfig user: a client certificate or a token.
type credentials struct {
	crt, key []byte
	token    string
}

// The kubeconfig (clientcmd v1) fields Kiln writes. client-go is not
// imported here: this package stays light for the root module.
type kubeconfigFile struct {
	APIVersion     string         `yaml:"apiVersion"`
	Kind           string         `yaml:"kind"`
	Clusters       []namedCluster `yaml:"clusters"`
	Users          []namedUser    `yaml:"users"`
	Contexts       []namedContext `yaml:"contexts"`
	CurrentContext string         `yaml:"current-context"`
}

type namedCluster struct {
	Name    string `yaml:"name"`
	Cluster struct {
		Server                   string `yaml:"server"`
		CertificateAuthorityData string `yaml:"certificate-authority-data"`
	} `yaml:"cluster"`
}

type namedUser struct {
	Name string `yaml:"name"`
	User struct {
		ClientCertificateData string `yaml:"client-certificate-data,omitempty"`
		ClientKeyData         string `yaml:"client-key-data,omitempty"`
		Token                 string `yaml:"token,omitempty"`
	} `yaml:"user"`
}

type namedContext struct {
	Name    string `yaml:"name"`
	Context struct {
		Cluster string `yaml:"cluster"`
		User    string `yaml:"user"`
	} `yaml:"context"`
}

// kubeconfig returns a kubeconfig with one cluster, one user and one context
// (user@cluster) that is current; certificates are embedded.
func kubeconfig(clusterName, server string, caPEM []byte, user string, cred credentials) ([]byte, error) {
	b64 := base64.StdEncoding.EncodeToString
	ctx := user + "@" + clusterName
	k := kubeconfigFile{APIVersion: "v1", Kind: "Config", CurrentContext: ctx}
	var c namedCluster
	c.Name = clusterName
	c.Cluster.Server = server
	c.Cluster.CertificateAuthorityData = b64(caPEM)
	var u namedUser
	u.Name = user
	if cred.token != "" {
		u.User.Token = cred.token
	} else {
		u.User.ClientCertificateData = b64(cred.crt)
		u.User.ClientKeyData = b64(cred.key)
	}
	var x namedContext
	x.Name = ctx
	x.Context.Cluster = clusterName
	x.Context.User = user
	k.Clusters, k.Users, k.Contexts = []namedCluster{c}, []namedUser{u}, []namedContext{x}
	out, err := yaml.Marshal(&k)
	if err != nil {
		return nil, fmt.Errorf("marshal kubeconfig: %w", err)
	}
	return out, nil
}
