package config

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateConfigs compares configs as their YAML does: nil and empty alike.
var equateConfigs = cmpopts.EquateEmpty()

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// wantPaths reads the "# want: <path>" header lines of a testdata file.
func wantPaths(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		p, ok := strings.CutPrefix(line, "# want: ")
		if !ok {
			break
		}
		out = append(out, strings.TrimSpace(p))
	}
	return out
}

func mustParse(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Parse(readFile(t, path))
	if err != nil {
		t.Fatalf("Parse(%s) = %v", path, err)
	}
	return c
}

func TestInvalid(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("only %d invalid configs in testdata/invalid, want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data := readFile(t, f)
			want := wantPaths(data)
			if len(want) == 0 {
				t.Fatalf("%s has no '# want: <path>' header", f)
			}
			_, err := Parse(data)
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("Parse(%s) = %v, want a *config.Error", f, err)
			}
			got := slices.Compact(slices.Sorted(slices.Values(cerr.Paths())))
			slices.Sort(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Parse(%s) problem paths (-want +got):\n%s\nerror:\n%v", f, diff, err)
			}
			t.Logf("%v", err)
		})
	}
}

func TestValidRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/valid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no valid configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := mustParse(t, f)
			out, err := c.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			c2, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Bytes()) = %v\n%s", err, out)
			}
			if diff := cmp.Diff(c, c2, equateConfigs); diff != "" {
				t.Errorf("Parse(Bytes()) differs (-first +second):\n%s", diff)
			}
			out2, err := c2.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, out2) {
				t.Errorf("Bytes() is not stable:\n%s\n---- vs ----\n%s", out, out2)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}
