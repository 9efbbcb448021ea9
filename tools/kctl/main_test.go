package main

import (
	"context"
	"path/filepath"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KCTLCONFIG", filepath.Join(dir, "config"))
	if err := run(context.Background(), []string{"version", "--client"}); err != nil {
		t.Errorf("run(version --client) = %v", err)
	}
	if err := run(context.Background(), []string{"no-such-command"}); err == nil {
		t.Errorf("run(no-such-command) = nil, want an error")
	}
}
