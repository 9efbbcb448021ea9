package fstree

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEntriesImplyParentsAndSort(t *testing.T) {
	tr := New()
	for _, err := range []error{
		tr.AddData("usr/bin/machined", 0o755, []byte("x")),
		tr.AddDir("tmp", 0o1777),
		tr.AddSymlink("etc/os-release", "../usr/lib/os-release"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, e := range tr.Entries() {
		got = append(got, e.Path)
	}
	want := []string{"etc", "etc/os-release", "tmp", "usr", "usr/bin", "usr/bin/machined"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Entries mismatch (-want +got):\n%s", diff)
	}
	if e, _ := tr.Get("tmp"); e.Perm != 0o1777 {
		t.Errorf("tmp perm = %o, want 1777", e.Perm)
	}
}

func TestAddErrors(t *testing.T) {
	tr := New()
	if err := tr.AddData("a", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"twice", tr.AddData("a", 0o644, nil)},
		{"under a file", tr.AddData("a/b", 0o644, nil)},
		{"empty path", tr.AddData("", 0o644, nil)},
		{"missing host file", tr.AddFile("c", 0o644, "/nonexistent/kiln")},
	} {
		if tc.err == nil {
			t.Errorf("%s: Add succeeded, want an error", tc.name)
		}
	}
}

func TestStageModes(t *testing.T) {
	tr := New()
	if err := tr.AddDir("tmp", 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := tr.AddData("bin/x", 0o750, []byte("x")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := tr.Stage(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode = %v, %v; want sticky 0777", st.Mode(), err)
	}
	st, err = os.Stat(filepath.Join(dir, "bin/x"))
	if err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("bin/x mode = %v, %v; want 0750", st.Mode(), err)
	}
}
