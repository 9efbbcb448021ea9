// Package clientconfig reads and writes kctl's client configuration file
// (like talosconfig or kubeconfig): named contexts, each with the endpoints
// and nodes to talk to and the machine CA, client certificate and key that
// authenticate the user, PEM-encoded and then base64-encoded.
//
//	context: prod
//	contexts:
//	  prod:
//	    endpoints: [10.0.0.2]
//	    nodes: [10.0.0.2, 10.0.0.3]
//	    ca: LS0tLS1CRUdJTi...
//	    crt: LS0tLS1CRUdJTi...
//	    key: LS0tLS1CRUdJTi...
package clientconfig

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-os/kiln/machined/atomicfile"
	"go.yaml.in/yaml/v3"
)

// EnvVar names the environment variable that overrides the default path.
const EnvVar = "KCTLCONFIG"

// Config is the whole client configuration file.
type Config struct {
	// Context names the context used when none is asked for.
	Context string `yaml:"context"`
	// Contexts maps names to contexts.
	Contexts map[string]*Context `yaml:"contexts"`
}

// Context is one cluster (or node) and the credentials to reach it.
type Context struct {
	// Endpoints are dialled when no nodes are given.
	Endpoints []string `yaml:"endpoints"`
	// Nodes are the default targets of commands.
	Nodes []string `yaml:"nodes,omitempty"`
	// CA is the base64 of the machine CA certificate, PEM.
	CA string `yaml:"ca,omitempty"`
	// Crt is the base64 of the client certificate, PEM.
	Crt string `yaml:"crt,omitempty"`
	// Key is the base64 of the client private key, PEM.
	Key string `yaml:"key,omitempty"`
}

// ErrNoContext is returned when a context is asked for that the file does
// not hold.
var ErrNoContext = errors.New("no such context")

// New returns an empty configuration.
func New() *Config {
	return &Config{Contexts: map[string]*Context{}}
}

// NewContext builds a context from PEM data, encoding it for the file.
func NewContext(endpoints, nodes []string, caPEM, crtPEM, keyPEM []byte) *Context {
	enc := base64.StdEncoding.EncodeToString
	return &Context{
		Endpoints: endpoints,
		Nodes:     nodes,
		CA:        enc(caPEM),
		Crt:       enc(crtPEM),
		Key:       enc(keyPEM),
	}
}

// DefaultPath is ~/.kctl/config.
func DefaultPath() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the client config: %w", err)
	}
	return filepath.Join(home, ".kctl", "config"), nil
}

// Path picks the configuration file: flag when it is not empty, else
// $KCTLCONFIG when set, else DefaultPath.
func Path(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv(EnvVar); env != "" {
		return env, nil
	}
	return DefaultPath()
}

// Parse decodes a configuration file. Unknown fields are errors.
func Parse(data []byte) (*Config, error) {
	c := New()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}
	for name, ctx := range c.Contexts {
		if ctx == nil {
			c.Contexts[name] = &Context{}
		}
	}
	return c, nil
}

// Load reads the configuration file at path. A missing file is an error
// satisfying errors.Is(err, fs.ErrNotExist).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	return c, nil
}

// Bytes encodes the configuration as YAML.
func (c *Config) Bytes() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode client config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode client config: %w", err)
	}
	return buf.Bytes(), nil
}

// Save writes the configuration to path atomically (a temporary file in the
// same directory, renamed over path) with mode 0600, creating the directory
// (0700) when needed.
func (c *Config) Save(path string) error {
	data, err := c.Bytes()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Names lists the context names, sorted.
func (c *Config) Names() []string {
	names := make([]string, 0, len(c.Contexts))
	for name := range c.Contexts {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Current returns the context called name, or the file's current context
// when name is empty, and the name it was found under.
func (c *Config) Current(name string) (*Context, string, error) {
	if name == "" {
		name = c.Context
	}
	if name == "" {
		return nil, "", fmt.Errorf("%w: the client config names no current context (use kctl config context NAME)", ErrNoContext)
	}
	ctx, ok := c.Contexts[name]
	if !ok {
		return nil, name, fmt.Errorf("%w %q (have: %s)", ErrNoContext, name, strings.Join(c.Names(), ", "))
	}
	return ctx, name, nil
}

// Merge adds every context of other to c. A context whose name is taken by a
// different context is renamed name-1, name-2, …; one identical to the
// context of the same name is not added twice. When other has a current
// context, it becomes c's current context (under its possibly new name).
// Merge returns the renames it made, old name to new.
func (c *Config) Merge(other *Config) map[string]string {
	if c.Contexts == nil {
		c.Contexts = map[string]*Context{}
	}
	renamed := map[string]string{}
	for _, name := range other.Names() {
		ctx := other.Contexts[name]
		newName := name
		for i := 1; ; i++ {
			have, taken := c.Contexts[newName]
			if !taken {
				c.Contexts[newName] = ctx.clone()
				break
			}
			if have.equal(ctx) {
				break
			}
			newName = name + "-" + strconv.Itoa(i)
		}
		if newName != name {
			renamed[name] = newName
		}
	}
	if other.Context != "" {
		if n, ok := renamed[other.Context]; ok {
			c.Context = n
		} else if _, ok := c.Contexts[other.Context]; ok {
			c.Context = other.Context
		}
	}
	return renamed
}

func (x *Context) clone() *Context {
	y := *x
	y.Endpoints = slices.Clone(x.Endpoints)
	y.Nodes = slices.Clone(x.Nodes)
	return &y
}

func (x *Context) equal(y *Context) bool {
	return slices.Equal(x.Endpoints, y.Endpoints) && slices.Equal(x.Nodes, y.Nodes) &&
		x.CA == y.CA && x.Crt == y.Crt && x.Key == y.Key
}

// HasCredentials reports whether the context carries a CA, certificate and key.
func (x *Context) HasCredentials() bool {
	return x.CA != "" && x.Crt != "" && x.Key != ""
}

// PEM decodes the context's CA, client certificate and key.
func (x *Context) PEM() (caPEM, crtPEM, keyPEM []byte, err error) {
	dec := func(field, s string) ([]byte, error) {
		if s == "" {
			return nil, fmt.Errorf("%s: empty", field)
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: not base64: %w", field, err)
		}
		return b, nil
	}
	if caPEM, err = dec("ca", x.CA); err != nil {
		return nil, nil, nil, err
	}
	if crtPEM, err = dec("crt", x.Crt); err != nil {
		return nil, nil, nil, err
	}
	if keyPEM, err = dec("key", x.Key); err != nil {
		return nil, nil, nil, err
	}
	return caPEM, crtPEM, keyPEM, nil
}
