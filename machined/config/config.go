package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// Config is a whole machine config: the MachineConfig document and the
// ServiceConfig documents, in file order.
type Config struct {
	Machine  *MachineConfig
	Services []*ServiceConfig
}

// Parse decodes a multi-document machine config strictly, applies the
// defaults and validates it. Every problem found is reported in one *Error.
func Parse(data []byte) (*Config, error) {
	p := newProblems()
	c := &Config{}
	machineDoc := -1

	docs, err := splitDocuments(data)
	// Service paths are named after the service, so work out the names
	// first; servicePrefixes gives Validate the same answer later.
	var names []string
	for _, doc := range docs {
		if root := doc.Content[0]; root.Kind == yaml.MappingNode && scalarField(root, "kind") == KindServiceConfig {
			names = append(names, scalarField(root, "name"))
		}
	}
	prefixes := servicePrefixes(names)

	for i, doc := range docs {
		p.doc = i
		d := &decoder{p: p, doc: i}
		root := doc.Content[0]
		docPath := fmt.Sprintf("document[%d]", i)
		if root.Kind != yaml.MappingNode {
			d.fail(root, docPath, "expected a mapping with apiVersion and kind, got %s", describe(root))
			continue
		}
		switch kind := scalarField(root, "kind"); kind {
		case KindMachineConfig:
			if machineDoc >= 0 {
				d.fail(root, docPath, "second MachineConfig document (the first is document[%d])", machineDoc)
				continue
			}
			machineDoc = i
			c.Machine = &MachineConfig{}
			d.decode(root, reflect.ValueOf(c.Machine).Elem(), "")
		case KindServiceConfig:
			s := &ServiceConfig{}
			d.decode(root, reflect.ValueOf(s).Elem(), prefixes[len(c.Services)])
			c.Services = append(c.Services, s)
		case "":
			d.fail(root, join(docPath, "kind"), "missing; want %s or %s", KindMachineConfig, KindServiceConfig)
		default:
			d.fail(root, join(docPath, "kind"), "unknown kind %q; want %s or %s", kind, KindMachineConfig, KindServiceConfig)
		}
	}
	if err != nil {
		p.at(position{doc: len(docs), line: 1 << 30}, fmt.Sprintf("document[%d]", len(docs)), "%v", err)
	} else if c.Machine == nil {
		p.at(position{doc: len(docs)}, KindMachineConfig, "missing: one document must be kind: %s", KindMachineConfig)
	}
	haveMachine := c.Machine != nil
	if !haveMachine {
		// Validate the services anyway; the machine section's own
		// problems would only repeat "missing MachineConfig".
		c.Machine = &MachineConfig{}
	}

	ApplyDefaults(c)
	p.doc = 0
	validate(c, p, haveMachine)
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks a config built in Go (Parse validates on its own). It does
// not apply defaults.
func (c *Config) Validate() error {
	if c == nil || c.Machine == nil {
		return &Error{Problems: []FieldError{{Path: KindMachineConfig, Msg: "missing: one document must be kind: " + KindMachineConfig}}}
	}
	p := newProblems()
	validate(c, p, true)
	return p.err()
}

// servicePrefixes returns the path prefix of each ServiceConfig document:
// ServiceConfig(name) for the first document with a usable name,
// ServiceConfig[i] otherwise.
func servicePrefixes(names []string) []string {
	out := make([]string, len(names))
	seen := make(map[string]bool)
	for i, name := range names {
		if isDNSLabel(name) && !seen[name] {
			seen[name] = true
			out[i] = "ServiceConfig(" + name + ")"
		} else {
			out[i] = fmt.Sprintf("ServiceConfig[%d]", i)
		}
	}
	return out
}

// splitDocuments parses every YAML document, skipping empty ones. On a
// syntax error it returns the documents before it and the error.
func splitDocuments(data []byte) (docs []*yaml.Node, err error) {
	defer func() {
		// The YAML library is not ours; a panic in it must not take
		// machined down with it.
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return docs, fmt.Errorf("invalid YAML: %w", err)
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) == 0 {
			continue
		}
		if r := n.Content[0]; r.Kind == yaml.ScalarNode && r.ShortTag() == "!!null" {
			continue
		}
		docs = append(docs, &n)
	}
}

// scalarField returns the value of a scalar key of a mapping node, or "".
func scalarField(m *yaml.Node, key string) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode || k.Value != key {
			continue
		}
		// The same leniency as the decoder: any scalar is a string.
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null" && v.ShortTag() != "!!binary" {
			return v.Value
		}
		return ""
	}
	return ""
}

// Bytes returns the canonical multi-document YAML of the config: the
// MachineConfig document first, then the services in order, keys in the
// order of the Go types, maps sorted. Parse(Bytes()) gives an equal config.
func (c *Config) Bytes() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if c.Machine != nil {
		if err := enc.Encode(c.Machine); err != nil {
			return nil, fmt.Errorf("encode MachineConfig: %w", err)
		}
	}
	for _, s := range c.Services {
		if err := enc.Encode(s); err != nil {
			return nil, fmt.Errorf("encode ServiceConfig %s: %w", s.Name, err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// Type returns the machine type (controlplane or worker).
func (c *Config) Type() MachineType { return c.Machine.Machine.Type }

// IsControlPlane reports whether the node runs the control plane.
func (c *Config) IsControlPlane() bool { return c.Type() == TypeControlPlane }

// Hostname returns the configured host name, "" when none is set.
func (c *Config) Hostname() string { return c.Machine.Machine.Hostname }

// ClusterName returns the cluster name.
func (c *Config) ClusterName() string { return c.Machine.Cluster.Name }

// Endpoint returns the parsed control-plane endpoint URL.
func (c *Config) Endpoint() (*url.URL, error) {
	u, err := url.Parse(c.Machine.Cluster.ControlPlane.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("cluster.controlPlane.endpoint: %w", err)
	}
	return u, nil
}

// Service returns the extension service with the given name, or nil.
func (c *Config) Service(name string) *ServiceConfig {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}
