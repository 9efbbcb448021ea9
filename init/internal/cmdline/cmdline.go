// Package cmdline reads init's settings from the kernel command line (kiln.* keys).
package cmdline

import (
	"fmt"
	"strings"
	"time"
)

// Defaults.
const (
	DefaultMachined = "/sbin/machined"
	DefaultRoot     = "/rootfs.sqsh"
)

// Params are init's settings. Keys:
//
//	kiln.machined=PATH      program init supervises (default /sbin/machined)
//	kiln.root=PATH          squashfs image inside the initramfs (default /rootfs.sqsh)
//	kiln.modules=0          skip module loading (kernels with everything built in)
//	kiln.stop_timeout=DUR   how long machined gets to stop on shutdown (default 30s)
//	kiln.debug=1            more init logging
type Params struct {
	Machined    string
	Root        string
	Modules     bool
	StopTimeout time.Duration
	Debug       bool
	// Raw holds every key=value (and bare key, value "") of the command line.
	Raw map[string]string
	// ModuleParams holds the module parameters of the command line by module name
	// (dashes as underscores, as the kernel names modules): "dummy.numdummies=0"
	// gives "dummy": {"numdummies=0"}, in command-line order. The kernel applies
	// these to the drivers built into it; init passes them to a module it loads, as
	// modprobe does.
	ModuleParams map[string][]string
}

// Parse parses a kernel command line. Unknown keys are kept in Raw; a malformed kiln.*
// value is an error so a typo does not pass unnoticed (init logs it and uses defaults).
func Parse(s string) (Params, error) {
	p := Params{Machined: DefaultMachined, Root: DefaultRoot, Modules: true, StopTimeout: 30 * time.Second, Raw: map[string]string{}}
	var errs []string
	for _, f := range Fields(s) {
		k, v, hasValue := strings.Cut(f, "=")
		p.Raw[k] = v
		if mod, param, ok := strings.Cut(k, "."); ok && mod != "" && param != "" && mod != "kiln" {
			if hasValue {
				if strings.ContainsAny(v, " \t\n") {
					v = `"` + v + `"`
				}
				param += "=" + v
			}
			if p.ModuleParams == nil {
				p.ModuleParams = map[string][]string{}
			}
			name := strings.ReplaceAll(mod, "-", "_")
			p.ModuleParams[name] = append(p.ModuleParams[name], param)
		}
		switch k {
		case "kiln.machined":
			if !strings.HasPrefix(v, "/") {
				errs = append(errs, fmt.Sprintf("kiln.machined=%q: want an absolute path", v))
				continue
			}
			p.Machined = v
		case "kiln.root":
			if !strings.HasPrefix(v, "/") {
				errs = append(errs, fmt.Sprintf("kiln.root=%q: want an absolute path", v))
				continue
			}
			p.Root = v
		case "kiln.modules":
			b, err := parseBool(v)
			if err != nil {
				errs = append(errs, "kiln.modules: "+err.Error())
				continue
			}
			p.Modules = b
		case "kiln.debug":
			b, err := parseBool(v)
			if err != nil {
				errs = append(errs, "kiln.debug: "+err.Error())
				continue
			}
			p.Debug = b
		case "kiln.stop_timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				errs = append(errs, fmt.Sprintf("kiln.stop_timeout=%q: want a duration like 30s", v))
				continue
			}
			p.StopTimeout = d
		}
	}
	if len(errs) > 0 {
		return p, fmt.Errorf("kernel command line: %s", strings.Join(errs, "; "))
	}
	return p, nil
}

func parseBool(v string) (bool, error) {
	switch v {
	case "", "1", "y", "yes", "true", "on":
		return true, nil
	case "0", "n", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (use 1 or 0)", v)
}

// Fields splits a command line like the kernel does: by spaces, with double quotes
// grouping (`a="b c"` is one field, quotes removed).
func Fields(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
