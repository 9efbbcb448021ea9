//go:build linux

package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// The flag and configuration errors come before anything touches the datapath.
func TestRunRejectsBadInvocations(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-kubeconfig")
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for success
	}{
		{"help", []string{"--help"}, ""},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
		{"bad log level", []string{"--log-level=loud"}, "--log-level"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"missing kubeconfig", []string{"--kubeconfig", missing}, "kubeconfig " + missing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("run(%q) = %v, want success", tc.args, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("run(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}
