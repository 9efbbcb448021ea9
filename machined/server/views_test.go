package server

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/api/roles"
)

func TestMountsAndNetstat(t *testing.T) {
	e := startServer(t, false)
	c := readerClient(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()

	mounts, err := c.Mounts(ctx, &machine.MountsRequest{})
	if err != nil {
		t.Fatalf("Mounts: %v", err)
	}
	wantMounts := &machine.MountsResponse{Mounts: []*machine.Mount{
		{Source: "/dev/loop0", Target: "/", Fstype: "squashfs", Options: "ro,relatime"},
		{Source: "/dev/vda4", Target: "/var", Fstype: "ext4", Options: "rw,nosuid,nodev,noatime"},
	}}
	if diff := cmp.Diff(wantMounts, mounts, protocmp.Transform()); diff != "" {
		t.Errorf("Mounts (-want +got):\n%s", diff)
	}

	socks, err := c.Netstat(ctx, &machine.NetstatRequest{})
	if err != nil {
		t.Fatalf("Netstat: %v", err)
	}
	wantSocks := &machine.NetstatResponse{Sockets: []*machine.Socket{
		{Protocol: "tcp6", LocalAddress: "::", LocalPort: 50000, State: "LISTEN"},
		{Protocol: "udp", LocalAddress: "10.0.2.15", LocalPort: 68},
	}}
	if diff := cmp.Diff(wantSocks, socks, protocmp.Transform()); diff != "" {
		t.Errorf("Netstat (-want +got):\n%s", diff)
	}
}

func TestDebugAction(t *testing.T) {
	for _, tt := range []struct {
		name    string
		enabled bool
		action  string
		want    codes.Code
		ran     []string
	}{
		{"disabled", false, "crash", codes.FailedPrecondition, nil},
		{"empty", true, "", codes.InvalidArgument, nil},
		{"unknown", true, "explode", codes.InvalidArgument, nil},
		{"crash", true, "crash", codes.OK, []string{"crash"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startServer(t, false)
			e.fake.mu.Lock()
			e.fake.debug = tt.enabled
			e.fake.mu.Unlock()
			c := machine.NewMachineServiceClient(dial(t, e.addr, withCert(roleCert(string(roles.Admin)))(t, e)))
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			resp, err := c.DebugAction(ctx, &machine.DebugActionRequest{Action: tt.action})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("DebugAction(%q) = %v, want code %s", tt.action, err, tt.want)
			}
			if err == nil && resp.GetMessage() == "" {
				t.Errorf("DebugAction(%q) answered without a message", tt.action)
			}
			e.fake.mu.Lock()
			defer e.fake.mu.Unlock()
			if diff := cmp.Diff(tt.ran, e.fake.actions); diff != "" {
				t.Errorf("actions run (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDebugActionNeedsAdmin: an operator is refused before the machine is
// asked, even with debug actions enabled.
func TestDebugActionNeedsAdmin(t *testing.T) {
	e := startServer(t, false)
	e.fake.mu.Lock()
	e.fake.debug = true
	e.fake.mu.Unlock()
	c := machine.NewMachineServiceClient(dial(t, e.addr, withCert(roleCert(string(roles.Operator)))(t, e)))
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if _, err := c.DebugAction(ctx, &machine.DebugActionRequest{Action: "crash"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("DebugAction as operator = %v, want PermissionDenied", err)
	}
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if len(e.fake.actions) != 0 {
		t.Errorf("the machine ran %q for an operator", e.fake.actions)
	}
}
