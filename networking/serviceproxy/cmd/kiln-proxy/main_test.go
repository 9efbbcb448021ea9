//go:build linux

package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/kiln-os/kiln/networking/serviceproxy"
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
		{"bad health-check address", []string{"--health-check-address=10.0.0"}, "--health-check-address"},
		{"empty external link", []string{"--external-links=eth0,,eth1"}, "--external-links"},
		{"unknown external algorithm", []string{"--external-lb=roundrobin"}, "--external-lb"},
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

func TestParseLinks(t *testing.T) {
	tests := []struct {
		in      string
		want    []serviceproxy.ExternalLink
		wantErr bool
	}{
		{"", nil, false},
		{"  ", nil, false},
		{"eth0", []serviceproxy.ExternalLink{{Name: "eth0"}}, false},
		{"eth0, vxlan0", []serviceproxy.ExternalLink{{Name: "eth0"}, {Name: "vxlan0"}}, false},
		{"eth0,", nil, true},
		{"eth0,eth0", nil, true},
		{"a-name-longer-than-ifnamsiz", nil, true},
		{"../eth0", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseLinks(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseLinks(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseLinks(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}
