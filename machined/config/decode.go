package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxDecodeSteps bounds the work one document may cause, so that alias
// expansion ("billion laughs") cannot make Parse run away.
const maxDecodeSteps = 200000

var (
	durationType = reflect.TypeFor[time.Duration]()
	fileModeType = reflect.TypeFor[FileMode]()
)

// decoder walks a yaml.Node tree against a Go type by reflection and fills a
// value, recording one problem per bad node (with its field path) and going
// on, so that a single Parse reports everything.
type decoder struct {
	p       *problems
	doc     int
	steps   int
	tooLong bool
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.p.at(d.pos(n), path, format, args...)
	d.p.failed[path] = true
}

func (d *decoder) pos(n *yaml.Node) position {
	return position{doc: d.doc, line: n.Line, col: n.Column}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.steps++
	if d.steps > maxDecodeSteps {
		if !d.tooLong {
			d.tooLong = true
			d.fail(n, path, "document too large (or too many alias expansions)")
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	d.p.pos[path] = d.pos(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		v.Set(reflect.Zero(v.Type()))
		return
	}

	switch t := v.Type(); {
	case t == durationType:
		s, ok := d.scalar(n, path, "a duration such as 10s")
		if !ok {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.fail(n, path, "%q is not a duration; write e.g. 10s or 1m30s", s)
			return
		}
		v.SetInt(int64(dur))
		return
	case t == fileModeType:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.fail(n, path, "expected permission bits such as 0o644, got %s", describe(n))
			return
		}
		var m uint64
		if err := n.Decode(&m); err != nil || m > 0o7777 {
			d.fail(n, path, "%s is not a valid file mode (0o0 to 0o7777)", n.Value)
			return
		}
		v.SetUint(m)
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), index(path, i))
		}
		v.Set(s)
	case reflect.String:
		s, ok := d.scalar(n, path, "a string")
		if ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.fail(n, path, "expected true or false, got %s", describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.fail(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if !d.integer(n, path, &i) {
			return
		}
		if v.OverflowInt(i) {
			d.fail(n, path, "%s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var i int64
		if !d.integer(n, path, &i) {
			return
		}
		if i < 0 || v.OverflowUint(uint64(i)) {
			d.fail(n, path, "%s is out of range", n.Value)
			return
		}
		v.SetUint(uint64(i))
	default:
		// Only reachable if a field of an unsupported type is added to
		// types.go; the round-trip tests catch that.
		d.fail(n, path, "internal error: cannot decode into %s", v.Type())
	}
}

// endPos is a position after the last line of a node's content.
func (d *decoder) endPos(n *yaml.Node) position {
	last := n
	for depth := 0; len(last.Content) > 0 && depth < 100; depth++ {
		last = last.Content[len(last.Content)-1]
	}
	return position{doc: d.doc, line: last.Line, col: 1 << 20}
}

// scalar returns the text of a scalar node. Any scalar is accepted as a
// string (args: [--port, 8080] means "8080"); the text is kept as written.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!binary" {
		d.fail(n, path, "expected %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) integer(n *yaml.Node, path string, out *int64) bool {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.fail(n, path, "expected an integer, got %s", describe(n))
		return false
	}
	if err := n.Decode(out); err != nil {
		d.fail(n, path, "%s is out of range", n.Value)
		return false
	}
	return true
}

// mappingKeys iterates a mapping's pairs, reporting non-scalar and duplicate
// keys.
func (d *decoder) mappingKeys(n *yaml.Node, path string, keyPath func(string) string, f func(key string, val *yaml.Node)) {
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "mapping key must be a string, got %s", describe(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.fail(k, path, "YAML merge keys (<<) are not supported")
			continue
		}
		if seen[k.Value] {
			d.fail(k, keyPath(k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		f(k.Value, val)
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	d.p.end[path] = d.endPos(n)
	fields := yamlFields(v.Type())
	d.mappingKeys(n, path, func(k string) string { return join(path, k) }, func(key string, val *yaml.Node) {
		i, ok := fields[key]
		if !ok {
			hint := ""
			for name := range fields {
				if strings.EqualFold(name, key) {
					hint = fmt.Sprintf(" (did you mean %s?)", name)
				}
			}
			d.fail(val, join(path, key), "unknown field%s", hint)
			return
		}
		d.decode(val, v.Field(i), join(path, key))
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	d.p.end[path] = d.endPos(n)
	m := reflect.MakeMap(v.Type())
	d.mappingKeys(n, path, func(k string) string { return mapPath(path, k) }, func(key string, val *yaml.Node) {
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, e, mapPath(path, key))
		m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
	})
	v.Set(m)
}

// mapPath is the path of a map entry: machine.sysctls["net.ipv4.ip_forward"].
func mapPath(path, key string) string {
	return path + "[" + strconv.Quote(key) + "]"
}

// yamlFields maps YAML key names to struct field indexes.
func yamlFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = i
	}
	return out
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("string %q", v)
	case "!!int":
		return "integer " + v
	case "!!float":
		return "number " + v
	case "!!bool":
		return "boolean " + v
	case "!!null":
		return "null"
	}
	return fmt.Sprintf("%s %q", n.ShortTag(), v)
}
