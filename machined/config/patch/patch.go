// Package patch applies talosctl-style patches to a machine config: RFC 6902
// JSON patches (applied to the MachineConfig document) and strategic-merge
// YAML documents (merged into the MachineConfig document or, by kind and
// name, into a ServiceConfig document).
//
// Strategic merge: mappings merge recursively, scalars are replaced, lists
// are appended to, except machine.network.interfaces, whose entries merge
// by interface name (or deviceSelector.hardwareAddr), and their vlans,
// which merge by vlanId.
package patch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-os/kiln/machined/config"
)

// Patch is a loaded patch.
type Patch interface {
	apply(docs *documents) error
}

// Load reads a patch given on the command line: inline YAML/JSON text, or
// @path to read it from a file.
func Load(arg string) (Patch, error) {
	data := []byte(arg)
	if path, ok := strings.CutPrefix(arg, "@"); ok {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("read patch: %w", err)
		}
	}
	return Parse(data)
}

// Parse decodes a patch: a YAML or JSON list of RFC 6902 operations, or one
// or more strategic-merge YAML documents.
func Parse(data []byte) (Patch, error) {
	docs, err := decodeAll(data)
	if err != nil {
		return nil, fmt.Errorf("parse patch: %w", err)
	}
	if len(docs) == 0 {
		return nil, errors.New("parse patch: empty")
	}
	if len(docs) == 1 && docs[0].Kind == yaml.SequenceNode {
		return parseJSONPatch(docs[0])
	}
	for i, d := range docs {
		if d.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("parse patch: document %d: want a mapping (strategic merge) or a list of operations (JSON patch)", i)
		}
	}
	return mergePatch(docs), nil
}

func decodeAll(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
			continue
		}
		out = append(out, root)
	}
}

// jsonPatch is an RFC 6902 patch of the MachineConfig document.
type jsonPatch struct{ ops jsonpatch.Patch }

func parseJSONPatch(n *yaml.Node) (Patch, error) {
	var ops []map[string]any
	if err := n.Decode(&ops); err != nil {
		return nil, fmt.Errorf("parse JSON patch: %w", err)
	}
	for i, op := range ops {
		if _, ok := op["op"]; !ok {
			return nil, fmt.Errorf("parse JSON patch: operation %d has no op", i)
		}
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("parse JSON patch: %w", err)
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return nil, fmt.Errorf("parse JSON patch: %w", err)
	}
	return jsonPatch{p}, nil
}

func (p jsonPatch) apply(docs *documents) error {
	i, err := docs.machine()
	if err != nil {
		return err
	}
	var v any
	if err := docs.list[i].Decode(&v); err != nil {
		return fmt.Errorf("JSON patch: read MachineConfig: %w", err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("JSON patch: MachineConfig as JSON: %w", err)
	}
	out, err := p.ops.Apply(raw)
	if err != nil {
		return fmt.Errorf("JSON patch: %w", err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal(out, &n); err != nil {
		return fmt.Errorf("JSON patch: result: %w", err)
	}
	docs.list[i] = n.Content[0]
	return nil
}

// mergePatch is one or more strategic-merge documents.
type mergePatch []*yaml.Node

func (p mergePatch) apply(docs *documents) error {
	for _, src := range p {
		switch kind := scalar(src, "kind"); kind {
		case "", config.KindMachineConfig:
			i, err := docs.machine()
			if err != nil {
				return err
			}
			merge(docs.list[i], src, "")
		case config.KindServiceConfig:
			name := scalar(src, "name")
			if name == "" {
				return errors.New("strategic merge: a ServiceConfig patch needs a name")
			}
			if i := docs.service(name); i >= 0 {
				merge(docs.list[i], src, "")
			} else {
				docs.list = append(docs.list, cloneNode(src))
			}
		default:
			return fmt.Errorf("strategic merge: unknown kind %q", kind)
		}
	}
	return nil
}

// mergeKeys says which lists merge their entries by key instead of
// appending, by the path of the list ("[]" stands for any index).
var mergeKeys = map[string][]string{
	"machine.network.interfaces":         {"interface", "deviceSelector.hardwareAddr"},
	"machine.network.interfaces[].vlans": {"vlanId"},
}

// merge merges src into dst in place.
func merge(dst, src *yaml.Node, path string) {
	switch {
	case dst.Kind == yaml.MappingNode && src.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(src.Content); i += 2 {
			k, v := src.Content[i], src.Content[i+1]
			if j := keyIndex(dst, k.Value); j >= 0 {
				merge(dst.Content[j+1], v, joinPath(path, k.Value))
			} else {
				dst.Content = append(dst.Content, cloneNode(k), cloneNode(v))
			}
		}
	case dst.Kind == yaml.SequenceNode && src.Kind == yaml.SequenceNode:
		keys := mergeKeys[path]
	next:
		for _, e := range src.Content {
			for _, key := range keys {
				want := nestedScalar(e, key)
				if want == "" {
					continue
				}
				for _, d := range dst.Content {
					if nestedScalar(d, key) == want {
						merge(d, e, path+"[]")
						continue next
					}
				}
			}
			dst.Content = append(dst.Content, cloneNode(e))
		}
	default:
		*dst = *cloneNode(src)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func keyIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// scalar returns the value of a top-level scalar key of a mapping.
func scalar(m *yaml.Node, key string) string {
	if m.Kind != yaml.MappingNode {
		return ""
	}
	if i := keyIndex(m, key); i >= 0 && m.Content[i+1].Kind == yaml.ScalarNode {
		return m.Content[i+1].Value
	}
	return ""
}

// nestedScalar follows a dotted key through mappings.
func nestedScalar(m *yaml.Node, dotted string) string {
	keys := strings.Split(dotted, ".")
	for _, k := range keys[:len(keys)-1] {
		if m.Kind != yaml.MappingNode {
			return ""
		}
		i := keyIndex(m, k)
		if i < 0 {
			return ""
		}
		m = m.Content[i+1]
	}
	return strings.ToLower(scalar(m, keys[len(keys)-1]))
}

func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, e := range n.Content {
		c.Content[i] = cloneNode(e)
	}
	return &c
}

// documents is a multi-document config being patched.
type documents struct{ list []*yaml.Node }

func (d *documents) machine() (int, error) {
	for i, n := range d.list {
		if scalar(n, "kind") == config.KindMachineConfig {
			return i, nil
		}
	}
	return -1, errors.New("config has no MachineConfig document")
}

func (d *documents) service(name string) int {
	for i, n := range d.list {
		if scalar(n, "kind") == config.KindServiceConfig && scalar(n, "name") == name {
			return i
		}
	}
	return -1
}

// Apply applies the patches in order to a multi-document config and returns
// the canonical YAML of the result, which must still pass config.Parse.
func Apply(cfg []byte, patches ...Patch) ([]byte, error) {
	list, err := decodeAll(cfg)
	if err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	docs := &documents{list: list}
	for i, p := range patches {
		if err := p.apply(docs); err != nil {
			return nil, fmt.Errorf("patch %d: %w", i+1, err)
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, n := range docs.list {
		if err := enc.Encode(n); err != nil {
			return nil, fmt.Errorf("encode patched config: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode patched config: %w", err)
	}
	c, err := config.Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("patched config is invalid: %w", err)
	}
	return c.Bytes()
}
