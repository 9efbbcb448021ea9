package server

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/api/roles"
)

func TestWarm(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maintenance bool
		want        codes.Code // of Warm's error
		versions    int        // Version calls the machine answered
	}{
		{name: "maintenance", maintenance: true, want: codes.OK, versions: 1},
		// A configured node wants a client certificate; the call is refused.
		{name: "configured", want: codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startServer(t, tc.maintenance)
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			err := e.srv.Warm(ctx)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Warm: %v (code %v), want code %v", err, got, tc.want)
			}
			e.fake.mu.Lock()
			got := e.fake.versions
			e.fake.mu.Unlock()
			if got != tc.versions {
				t.Errorf("the machine answered %d Version calls, want %d", got, tc.versions)
			}
			// The server goes on serving its own listener.
			cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // maintenance-mode style
			if !tc.maintenance {
				cfg = withCert(func(t *testing.T, e *testEnv) tls.Certificate {
					now := time.Now()
					return e.ca.clientCert(t, "admin", []string{string(roles.Admin)}, now.Add(-time.Hour), now.Add(time.Hour))
				})(t, e)
			}
			if _, err := machine.NewMachineServiceClient(dial(t, e.addr, cfg)).Version(ctx, &machine.VersionRequest{}); err != nil {
				t.Errorf("Version over TCP after Warm: %v", err)
			}
		})
	}
}
