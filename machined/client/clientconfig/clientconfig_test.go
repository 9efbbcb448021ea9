package clientconfig

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() *Config {
	return &Config{
		Context: "prod",
		Contexts: map[string]*Context{
			"prod": NewContext([]string{"10.0.0.2"}, []string{"10.0.0.2", "10.0.0.3"}, []byte("CA"), []byte("CRT"), []byte("KEY")),
			"lab":  {Endpoints: []string{"127.0.0.1:50001"}},
		},
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "config")
	want := sample()
	if err := want.Save(path); err != nil {
		t.Fatalf("Save(%q): %v", path, err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%q): %v", path, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load after Save (-want +got):\n%s", diff)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("mode of %s = %o, want 600", path, perm)
		}
	}
	// No temporary files are left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after Save, want 1", len(entries))
	}
	ca, crt, key, err := got.Contexts["prod"].PEM()
	if err != nil {
		t.Fatalf("PEM(): %v", err)
	}
	if diff := cmp.Diff([]string{"CA", "CRT", "KEY"}, []string{string(ca), string(crt), string(key)}); diff != "" {
		t.Errorf("PEM() (-want +got):\n%s", diff)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Config
		wantErr bool
	}{
		{name: "empty", in: "", want: New()},
		{
			name: "full",
			in: `context: a
contexts:
  a:
    endpoints: [1.2.3.4]
    nodes: [1.2.3.5]
    ca: Q0E=
    crt: Q1JU
    key: S0VZ
`,
			want: &Config{Context: "a", Contexts: map[string]*Context{"a": {
				Endpoints: []string{"1.2.3.4"}, Nodes: []string{"1.2.3.5"}, CA: "Q0E=", Crt: "Q1JU", Key: "S0VZ",
			}}},
		},
		{name: "empty context", in: "contexts:\n  a:\n", want: &Config{Contexts: map[string]*Context{"a": {}}}},
		{name: "unknown field", in: "contexts:\n  a:\n    endpoint: [x]\n", wantErr: true},
		{name: "not yaml", in: "[", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
	}
}

func TestMerge(t *testing.T) {
	a := func(ep string) *Context { return &Context{Endpoints: []string{ep}} }
	tests := []struct {
		name        string
		base, other *Config
		want        *Config
		wantRenamed map[string]string
	}{
		{
			name:        "into empty",
			base:        New(),
			other:       &Config{Context: "x", Contexts: map[string]*Context{"x": a("1")}},
			want:        &Config{Context: "x", Contexts: map[string]*Context{"x": a("1")}},
			wantRenamed: map[string]string{},
		},
		{
			name:        "conflict renamed",
			base:        &Config{Context: "x", Contexts: map[string]*Context{"x": a("1"), "x-1": a("2")}},
			other:       &Config{Context: "x", Contexts: map[string]*Context{"x": a("3"), "y": a("4")}},
			want:        &Config{Context: "x-2", Contexts: map[string]*Context{"x": a("1"), "x-1": a("2"), "x-2": a("3"), "y": a("4")}},
			wantRenamed: map[string]string{"x": "x-2"},
		},
		{
			name:        "identical not duplicated",
			base:        &Config{Context: "y", Contexts: map[string]*Context{"x": a("1"), "y": a("2")}},
			other:       &Config{Context: "x", Contexts: map[string]*Context{"x": a("1")}},
			want:        &Config{Context: "x", Contexts: map[string]*Context{"x": a("1"), "y": a("2")}},
			wantRenamed: map[string]string{},
		},
		{
			name:        "merging twice is idempotent",
			base:        &Config{Context: "x-1", Contexts: map[string]*Context{"x": a("1"), "x-1": a("2")}},
			other:       &Config{Context: "x", Contexts: map[string]*Context{"x": a("2")}},
			want:        &Config{Context: "x-1", Contexts: map[string]*Context{"x": a("1"), "x-1": a("2")}},
			wantRenamed: map[string]string{"x": "x-1"},
		},
		{
			name:        "no current context keeps ours",
			base:        &Config{Context: "x", Contexts: map[string]*Context{"x": a("1")}},
			other:       &Config{Contexts: map[string]*Context{"z": a("9")}},
			want:        &Config{Context: "x", Contexts: map[string]*Context{"x": a("1"), "z": a("9")}},
			wantRenamed: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			renamed := tt.base.Merge(tt.other)
			if diff := cmp.Diff(tt.want, tt.base); diff != "" {
				t.Errorf("Merge() config (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRenamed, renamed); diff != "" {
				t.Errorf("Merge() renamed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("USERPROFILE", home)
	tests := []struct {
		name, flag, env, want string
	}{
		{name: "default", want: filepath.Join(home, ".kctl", "config")},
		{name: "env", env: "/from/env", want: "/from/env"},
		{name: "flag wins", flag: "/from/flag", env: "/from/env", want: "/from/flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvVar, tt.env)
			got, err := Path(tt.flag)
			if err != nil {
				t.Fatalf("Path(%q): %v", tt.flag, err)
			}
			if got != tt.want {
				t.Errorf("Path(%q) with %s=%q = %q, want %q", tt.flag, EnvVar, tt.env, got, tt.want)
			}
		})
	}
}

func TestCurrent(t *testing.T) {
	c := sample()
	tests := []struct {
		name, ask, wantName string
		wantErr             bool
	}{
		{name: "default", wantName: "prod"},
		{name: "named", ask: "lab", wantName: "lab"},
		{name: "missing", ask: "nope", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, name, err := c.Current(tt.ask)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Current(%q) error = %v, want error %v", tt.ask, err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrNoContext) {
					t.Errorf("Current(%q) error = %v, want ErrNoContext", tt.ask, err)
				}
				return
			}
			if name != tt.wantName || ctx != c.Contexts[tt.wantName] {
				t.Errorf("Current(%q) = %q, want %q", tt.ask, name, tt.wantName)
			}
		})
	}
	if _, _, err := New().Current(""); !errors.Is(err, ErrNoContext) {
		t.Errorf("New().Current(\"\") error = %v, want ErrNoContext", err)
	}
}
