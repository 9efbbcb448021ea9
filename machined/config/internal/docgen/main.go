// Command docgen writes the JSON schema of the machine config and the config
// reference (docs/config.md) from the Go types of package config and their
// doc comments. Defaults come from config.ApplyDefaults, so the reference
// cannot drift from the code. Run it through `go generate ./machined/config`.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/kiln-os/kiln/machined/config"
)

const pkgPath = "github.com/kiln-os/kiln/machined/config"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("docgen", flag.ContinueOnError)
	src := fs.String("src", ".", "directory of package config")
	schemaPath := fs.String("schema", "", "where to write the JSON schema")
	docsPath := fs.String("docs", "", "where to write the Markdown reference")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r := newReflector()
	if err := r.AddGoComments(pkgPath, *src); err != nil {
		return fmt.Errorf("read doc comments: %w", err)
	}
	defaults := collectDefaults()
	if *schemaPath != "" {
		data, err := schema(r, defaults)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*schemaPath, data, 0o644); err != nil {
			return fmt.Errorf("write schema: %w", err)
		}
	}
	if *docsPath != "" {
		if err := os.WriteFile(*docsPath, reference(r, defaults), 0o644); err != nil {
			return fmt.Errorf("write docs: %w", err)
		}
	}
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	fileModeType = reflect.TypeFor[config.FileMode]()
)

func newReflector() *jsonschema.Reflector {
	return &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			switch t {
			case durationType:
				return &jsonschema.Schema{Type: "string", Pattern: `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`}
			case fileModeType:
				return &jsonschema.Schema{Type: "integer", Minimum: "0", Maximum: "4095"}
			}
			return nil
		},
	}
}

// fieldKey names a field as the comment map does: pkg.Type.Field.
type fieldKey struct {
	typ   reflect.Type
	field string
}

// collectDefaults runs config.ApplyDefaults on a config with one of every
// list element and reads back what it filled in.
func collectDefaults() map[fieldKey]any {
	sample := &config.Config{
		Machine:  &config.MachineConfig{Machine: config.MachineSpec{Files: []config.FileConfig{{}}}},
		Services: []*config.ServiceConfig{{HealthCheck: &config.HealthCheck{}}},
	}
	config.ApplyDefaults(sample)
	out := make(map[fieldKey]any)
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i))
			}
		case reflect.Struct:
			for i := range v.NumField() {
				f := v.Field(i)
				if k := f.Kind(); k != reflect.Struct && k != reflect.Pointer && !(k == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct) {
					if !f.IsZero() {
						out[fieldKey{v.Type(), v.Type().Field(i).Name}] = f.Interface()
					}
				}
				walk(f)
			}
		}
	}
	walk(reflect.ValueOf(sample.Machine))
	walk(reflect.ValueOf(sample.Services[0]))
	return out
}

// jsonDefault is the default as the schema states it.
func jsonDefault(v any) any {
	switch d := v.(type) {
	case time.Duration:
		return d.String()
	case config.FileMode:
		return uint32(d)
	}
	return v
}

// docDefault is the default as the reference shows it.
func docDefault(v any) string {
	switch d := v.(type) {
	case time.Duration:
		return "`" + d.String() + "`"
	case config.FileMode:
		return "`" + d.String() + "`"
	case []string:
		return "`[" + strings.Join(d, ", ") + "]`"
	}
	return fmt.Sprintf("`%v`", v)
}

func schema(r *jsonschema.Reflector, defaults map[fieldKey]any) ([]byte, error) {
	root := &jsonschema.Schema{
		Version:     jsonschema.Version,
		ID:          "https://kiln.dev/schemas/v1alpha1/config.schema.json",
		Title:       "Kiln machine config document",
		Description: "One document of a Kiln machine config: a MachineConfig or a ServiceConfig.",
		Definitions: jsonschema.Definitions{},
	}
	for _, v := range []any{&config.MachineConfig{}, &config.ServiceConfig{}} {
		s := r.Reflect(v)
		root.OneOf = append(root.OneOf, &jsonschema.Schema{Ref: s.Ref})
		for name, def := range s.Definitions {
			root.Definitions[name] = def
		}
	}
	for k, v := range defaults {
		def, ok := root.Definitions[k.typ.Name()]
		if !ok || def.Properties == nil {
			continue
		}
		if p, ok := def.Properties.Get(yamlName(k.typ, k.field)); ok {
			p.Default = jsonDefault(v)
		}
	}
	data, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode schema: %w", err)
	}
	return append(data, '\n'), nil
}

func yamlName(t reflect.Type, field string) string {
	f, _ := t.FieldByName(field)
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// doc writes the Markdown reference.
type doc struct {
	r        *jsonschema.Reflector
	defaults map[fieldKey]any
	buf      bytes.Buffer
	// sections holds the anchor of the section of each struct type already
	// written; later uses link there.
	sections map[reflect.Type]string
	// children collects the sections first linked from the table being
	// written; they follow it, depth first.
	children []section
}

type section struct {
	path string
	typ  reflect.Type
}

func reference(r *jsonschema.Reflector, defaults map[fieldKey]any) []byte {
	d := &doc{r: r, defaults: defaults, sections: make(map[reflect.Type]string)}
	b := &d.buf
	b.WriteString("<!-- Code generated by machined/config/internal/docgen from the Go types of machined/config. DO NOT EDIT. -->\n\n")
	b.WriteString("# Machine config reference\n\n")
	b.WriteString("A Kiln machine config is multi-document YAML: exactly one `MachineConfig` document and any number of\n")
	b.WriteString("`ServiceConfig` documents, separated by `---`. Every document has `apiVersion: " + config.APIVersion + "`.\n")
	b.WriteString("Decoding is strict: unknown fields, wrong types and invalid values are errors, all reported at once with\n")
	b.WriteString("their field path (`machine.network.interfaces[0].addresses[1]: \"10.0.0.300/24\" is not a valid CIDR`).\n")
	b.WriteString("Keys and certificates are the base64 encoding of PEM text. The JSON schema of one document is\n")
	b.WriteString("[machined/config/schema/config.schema.json](../machined/config/schema/config.schema.json).\n\n")
	b.WriteString("Lists of strings accept any scalar (`args: [--port, 8080]`), and the value is kept as written.\n")
	b.WriteString("Extension services may depend on Kiln's own services: `" + strings.Join(config.ReservedServiceNames, "`, `") + "`.\n\n")

	top := []section{{"MachineConfig", reflect.TypeFor[config.MachineConfig]()}, {"ServiceConfig", reflect.TypeFor[config.ServiceConfig]()}}
	for _, s := range top {
		d.anchor(s)
	}
	for _, s := range top {
		d.section(s)
	}
	return b.Bytes()
}

// anchor registers the section of a type and returns its anchor.
func (d *doc) anchor(s section) string {
	if a, ok := d.sections[s.typ]; ok {
		return a
	}
	a := anchorOf(s.path)
	d.sections[s.typ] = a
	return a
}

// anchorOf is GitHub's anchor for a heading.
func anchorOf(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func (d *doc) section(s section) {
	b := &d.buf
	level := "##"
	if strings.Contains(s.path, ".") {
		level = "###"
	}
	fmt.Fprintf(b, "%s %s\n\n", level, s.path)
	if c := d.comment(s.typ, ""); c != "" {
		b.WriteString(c + "\n\n")
	}
	b.WriteString("| Field | Type | Default | Description |\n|---|---|---|---|\n")
	for i := range s.typ.NumField() {
		f := s.typ.Field(i)
		name := yamlName(s.typ, f.Name)
		typ := d.typeName(join(s.path, name), f.Type)
		if enum := enumOf(f); len(enum) > 0 {
			typ += ": `" + strings.Join(enum, "` \\| `") + "`"
		}
		def := ""
		if v, ok := d.defaults[fieldKey{s.typ, f.Name}]; ok {
			def = docDefault(v)
		}
		desc := d.comment(s.typ, f.Name)
		if slices.Contains(strings.Split(f.Tag.Get("jsonschema"), ","), "required") {
			desc = "**Required.** " + desc
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", name, typ, def, escape(desc))
	}
	b.WriteString("\n")
	children := d.children
	d.children = nil
	for _, c := range children {
		d.section(c)
	}
}

func join(path, name string) string {
	if path == "MachineConfig" || path == "ServiceConfig" {
		if path == "ServiceConfig" {
			return "ServiceConfig." + name
		}
		return name
	}
	return path + "." + name
}

// typeName describes a Go type for the reference, queueing sections for
// struct types not seen yet.
func (d *doc) typeName(path string, t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == fileModeType:
		return "file mode"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return d.typeName(path, t.Elem())
	case reflect.Struct:
		return d.link(path, t, "object")
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "list of " + d.link(path+"[]", t.Elem(), "objects")
		}
		return "list of " + d.typeName(path, t.Elem()) + "s"
	case reflect.Map:
		return "map of string to string"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	default:
		return "integer"
	}
}

func (d *doc) link(path string, t reflect.Type, word string) string {
	if a, ok := d.sections[t]; ok {
		return fmt.Sprintf("[%s](#%s)", word, a)
	}
	s := section{path, t}
	a := d.anchor(s)
	d.children = append(d.children, s)
	return fmt.Sprintf("[%s](#%s)", word, a)
}

func (d *doc) comment(t reflect.Type, field string) string {
	key := t.PkgPath() + "." + t.Name()
	if field != "" {
		key += "." + field
	}
	return strings.Join(strings.Fields(d.r.CommentMap[key]), " ")
}

func enumOf(f reflect.StructField) []string {
	var out []string
	for part := range strings.SplitSeq(f.Tag.Get("jsonschema"), ",") {
		if v, ok := strings.CutPrefix(part, "enum="); ok {
			out = append(out, v)
		}
	}
	return out
}

func escape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
