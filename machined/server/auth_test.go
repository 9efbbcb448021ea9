package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/api/roles"
)

// hang protects tests against deadlocks; it is not a timing assertion.
const hang = 30 * time.Second

const kmsgRecords = "6,1,1000,-;Linux version 6.12\n SUBSYSTEM=cpu\n4,2,2500000,-;a warning\n"

type testEnv struct {
	srv  *Server
	addr string
	ca   *testCA
	fake *fakeMachine
}

// startServer serves a fake machine on 127.0.0.1:0 with real TLS.
func startServer(t *testing.T, maintenance bool) *testEnv {
	t.Helper()
	kmsg := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(kmsg, []byte(kmsgRecords), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServerWith(t, maintenance, kmsg)
}

// startServerWith is startServer reading the kernel log from kmsg.
func startServerWith(t *testing.T, maintenance bool, kmsg string) *testEnv {
	t.Helper()
	ca := newTestCA(t, "machine CA")
	id := Identity{Certificate: ca.serverCert(t), ClientCAs: ca.pool}
	if maintenance {
		id = Identity{Certificate: selfSigned(t), Maintenance: true}
	}
	fake := newFakeMachine()
	srv, err := New(Options{Machine: fake, Identity: id, KmsgPath: kmsg})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		srv.Stop(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testEnv{srv: srv, addr: l.Addr().String(), ca: ca, fake: fake}
}

func dial(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// caller is one kind of client in the role walk.
type caller struct {
	name string
	tls  func(t *testing.T, e *testEnv) *tls.Config
	// roles the caller legitimately holds; nil when it must be refused
	// everything.
	roles []roles.Role
	// refusal is the code every refused call must get.
	refusal codes.Code
}

func withCert(cert func(t *testing.T, e *testEnv) tls.Certificate) func(t *testing.T, e *testEnv) *tls.Config {
	return func(t *testing.T, e *testEnv) *tls.Config {
		c := &tls.Config{RootCAs: e.ca.pool}
		if cert != nil {
			c.Certificates = []tls.Certificate{cert(t, e)}
		}
		return c
	}
}

func roleCert(orgs ...string) func(t *testing.T, e *testEnv) tls.Certificate {
	return func(t *testing.T, e *testEnv) tls.Certificate {
		now := time.Now()
		return e.ca.clientCert(t, "user", orgs, now.Add(-time.Hour), now.Add(time.Hour))
	}
}

var callers = []caller{
	{name: "admin", tls: withCert(roleCert(string(roles.Admin))), roles: []roles.Role{roles.Admin}, refusal: codes.PermissionDenied},
	{name: "operator", tls: withCert(roleCert(string(roles.Operator))), roles: []roles.Role{roles.Operator}, refusal: codes.PermissionDenied},
	{name: "reader", tls: withCert(roleCert(string(roles.Reader))), roles: []roles.Role{roles.Reader}, refusal: codes.PermissionDenied},
	{name: "unknown role", tls: withCert(roleCert("system:masters", "os:root")), refusal: codes.PermissionDenied},
	{name: "no certificate", tls: withCert(nil), refusal: codes.Unauthenticated},
	{name: "other CA", tls: withCert(func(t *testing.T, e *testEnv) tls.Certificate {
		now := time.Now()
		return newTestCA(t, "evil CA").clientCert(t, "mallory", []string{string(roles.Admin)}, now.Add(-time.Hour), now.Add(time.Hour))
	}), refusal: codes.Unauthenticated},
	{name: "expired", tls: withCert(func(t *testing.T, e *testEnv) tls.Certificate {
		now := time.Now()
		return e.ca.clientCert(t, "former", []string{string(roles.Admin)}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	}), refusal: codes.Unauthenticated},
}

func recvAll[T any](s grpc.ServerStreamingClient[T]) error {
	for {
		if _, err := s.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// calls makes one call of every method the server exposes.
var calls = map[string]func(ctx context.Context, cc *grpc.ClientConn) error{
	machine.MachineService_ApplyConfiguration_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).ApplyConfiguration(ctx, &machine.ApplyConfigurationRequest{Data: []byte("machine: {}"), DryRun: true})
		return err
	},
	machine.MachineService_ConfirmConfiguration_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).ConfirmConfiguration(ctx, &machine.ConfirmConfigurationRequest{})
		return err
	},
	machine.MachineService_GetConfig_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).GetConfig(ctx, &machine.GetConfigRequest{})
		return err
	},
	machine.MachineService_Version_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Version(ctx, &machine.VersionRequest{})
		return err
	},
	machine.MachineService_Disks_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Disks(ctx, &machine.DisksRequest{})
		return err
	},
	machine.MachineService_ServiceList_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).ServiceList(ctx, &machine.ServiceListRequest{})
		return err
	},
	machine.MachineService_ServiceStart_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).ServiceStart(ctx, &machine.ServiceRequest{Id: "web"})
		return err
	},
	machine.MachineService_ServiceStop_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).ServiceStop(ctx, &machine.ServiceRequest{Id: "web"})
		return err
	},
	machine.MachineService_ServiceRestart_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		// An unknown service: allowed callers get NotFound, which is not a refusal.
		_, err := machine.NewMachineServiceClient(cc).ServiceRestart(ctx, &machine.ServiceRequest{Id: "nope"})
		return err
	},
	machine.MachineService_Logs_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		s, err := machine.NewMachineServiceClient(cc).Logs(ctx, &machine.LogsRequest{Id: "web", TailLines: -1})
		if err != nil {
			return err
		}
		return recvAll(s)
	},
	machine.MachineService_Dmesg_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		s, err := machine.NewMachineServiceClient(cc).Dmesg(ctx, &machine.DmesgRequest{})
		if err != nil {
			return err
		}
		return recvAll(s)
	},
	machine.MachineService_Events_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		s, err := machine.NewMachineServiceClient(cc).Events(ctx, &machine.EventsRequest{TailEvents: -1})
		if err != nil {
			return err
		}
		return recvAll(s)
	},
	machine.MachineService_Reboot_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Reboot(ctx, &machine.RebootRequest{})
		return err
	},
	machine.MachineService_Shutdown_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Shutdown(ctx, &machine.ShutdownRequest{})
		return err
	},
	machine.MachineService_Processes_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Processes(ctx, &machine.ProcessesRequest{})
		return err
	},
	machine.MachineService_Mounts_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Mounts(ctx, &machine.MountsRequest{})
		return err
	},
	machine.MachineService_Netstat_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Netstat(ctx, &machine.NetstatRequest{})
		return err
	},
	machine.MachineService_Links_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Links(ctx, &machine.LinksRequest{})
		return err
	},
	machine.MachineService_Addresses_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Addresses(ctx, &machine.AddressesRequest{})
		return err
	},
	machine.MachineService_Routes_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Routes(ctx, &machine.RoutesRequest{})
		return err
	},
	machine.MachineService_Resolvers_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Resolvers(ctx, &machine.ResolversRequest{})
		return err
	},
	machine.MachineService_Hostname_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Hostname(ctx, &machine.HostnameRequest{})
		return err
	},
	machine.MachineService_TimeStatus_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).TimeStatus(ctx, &machine.TimeStatusRequest{})
		return err
	},
	machine.MachineService_Leases_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := machine.NewMachineServiceClient(cc).Leases(ctx, &machine.LeasesRequest{})
		return err
	},
	machine.MachineService_DebugAction_FullMethodName: func(ctx context.Context, cc *grpc.ClientConn) error {
		// Debug actions are disabled in the fake: allowed callers get
		// FailedPrecondition, which is not a refusal.
		_, err := machine.NewMachineServiceClient(cc).DebugAction(ctx, &machine.DebugActionRequest{Action: "crash"})
		return err
	},
	roles.HealthCheck: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	},
	roles.HealthList: func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(cc).List(ctx, &healthpb.HealthListRequest{})
		return err
	},
	roles.HealthWatch: func(ctx context.Context, cc *grpc.ClientConn) error {
		s, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	},
}

// TestCallsCoverEveryMethod keeps the walk honest: every method the server
// registers is in the role table and is called by the walk.
func TestCallsCoverEveryMethod(t *testing.T) {
	srv, err := New(Options{Machine: newFakeMachine(), Identity: Identity{Certificate: selfSigned(t), Maintenance: true}})
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for name, info := range srv.grpc.GetServiceInfo() {
		for _, m := range info.Methods {
			served = append(served, "/"+name+"/"+m.Name)
		}
	}
	slices.Sort(served)
	var table, walked []string
	for m := range roles.Methods {
		table = append(table, m)
	}
	for m := range calls {
		walked = append(walked, m)
	}
	slices.Sort(table)
	slices.Sort(walked)
	if diff := cmp.Diff(served, table); diff != "" {
		t.Errorf("methods served vs roles.Methods (-served +table):\n%s", diff)
	}
	if diff := cmp.Diff(table, walked); diff != "" {
		t.Errorf("roles.Methods vs methods the walk calls (-table +walked):\n%s", diff)
	}
}

// TestRoleWalk calls every method as every kind of caller and checks each
// answer against the role table: no unauthorized success, no wrongful
// refusal.
func TestRoleWalk(t *testing.T) {
	e := startServer(t, false)
	var unauthorized, wrongful []string
	calledReboot := 0
	for _, c := range callers {
		cc := dial(t, e.addr, c.tls(t, e))
		for method, call := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			err := call(ctx, cc)
			cancel()
			allowed := c.roles != nil && roles.Allowed(method, c.roles)
			code := status.Code(err)
			refused := code == codes.Unauthenticated || code == codes.PermissionDenied
			switch {
			case allowed && refused:
				wrongful = append(wrongful, fmt.Sprintf("%s %s: %v", c.name, method, err))
			case allowed && code == codes.Unimplemented:
				t.Errorf("%s %s: %v", c.name, method, err)
			case !allowed && code != c.refusal:
				unauthorized = append(unauthorized, fmt.Sprintf("%s %s: got %v, want code %s", c.name, method, err, c.refusal))
			}
			if allowed && method == machine.MachineService_Reboot_FullMethodName {
				calledReboot++
			}
		}
	}
	slices.Sort(unauthorized)
	slices.Sort(wrongful)
	if len(unauthorized) > 0 {
		t.Errorf("%d calls not refused as they should be:\n%s", len(unauthorized), strings.Join(unauthorized, "\n"))
	}
	if len(wrongful) > 0 {
		t.Errorf("%d allowed calls refused:\n%s", len(wrongful), strings.Join(wrongful, "\n"))
	}
	// Refused calls must not reach the machine.
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if e.fake.reboots != calledReboot {
		t.Errorf("machine rebooted %d times, want %d (once per allowed caller)", e.fake.reboots, calledReboot)
	}
	if calledReboot != 2 {
		t.Errorf("reboot allowed to %d callers, want 2 (admin and operator)", calledReboot)
	}
}

// TestMaintenanceWalk: without configuration only the maintenance methods
// answer, with or without a client certificate.
func TestMaintenanceWalk(t *testing.T) {
	e := startServer(t, true)
	now := time.Now()
	admin := e.ca.clientCert(t, "admin", []string{string(roles.Admin)}, now.Add(-time.Hour), now.Add(time.Hour))
	for _, name := range []string{"insecure", "with admin certificate"} {
		t.Run(name, func(t *testing.T) {
			cfg := &tls.Config{InsecureSkipVerify: true}
			if name != "insecure" {
				cfg.Certificates = []tls.Certificate{admin}
			}
			cc := dial(t, e.addr, cfg)
			for method, call := range calls {
				ctx, cancel := context.WithTimeout(context.Background(), hang)
				err := call(ctx, cc)
				cancel()
				if roles.AllowedInMaintenance(method) {
					if err != nil {
						t.Errorf("%s in maintenance mode: %v, want success", method, err)
					}
					continue
				}
				if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), MaintenanceMessage) {
					t.Errorf("%s in maintenance mode: %v, want FailedPrecondition %q", method, err, MaintenanceMessage)
				}
			}
		})
	}
}

// TestLiveSwitch: leaving maintenance mode happens on the same listener, and
// a connection opened in maintenance mode loses its rights.
func TestLiveSwitch(t *testing.T) {
	e := startServer(t, true)
	insecure := dial(t, e.addr, &tls.Config{InsecureSkipVerify: true})
	version := calls[machine.MachineService_Version_FullMethodName]
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := version(ctx, insecure); err != nil {
		t.Fatalf("Version in maintenance mode: %v", err)
	}

	if err := e.srv.SetIdentity(Identity{Certificate: e.ca.serverCert(t), ClientCAs: e.ca.pool}); err != nil {
		t.Fatal(err)
	}
	if err := version(ctx, insecure); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Version on the maintenance connection after the switch: %v, want Unauthenticated", err)
	}
	fresh := dial(t, e.addr, &tls.Config{InsecureSkipVerify: true})
	if err := version(ctx, fresh); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Version without certificate after the switch: %v, want Unauthenticated", err)
	}
	reader := dial(t, e.addr, withCert(roleCert(string(roles.Reader)))(t, e))
	if err := version(ctx, reader); err != nil {
		t.Errorf("Version as reader after the switch: %v", err)
	}
	resp, err := machine.NewMachineServiceClient(reader).Version(ctx, &machine.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMaintenance() {
		t.Error("Version reports maintenance mode after the switch")
	}
}

func TestSetIdentityRejectsIncomplete(t *testing.T) {
	e := startServer(t, true)
	if err := e.srv.SetIdentity(Identity{Certificate: e.ca.serverCert(t)}); err == nil {
		t.Error("SetIdentity without client CAs outside maintenance mode succeeded")
	}
	if err := e.srv.SetIdentity(Identity{Maintenance: true}); err == nil {
		t.Error("SetIdentity without a certificate succeeded")
	}
}

func TestGetConfigRedaction(t *testing.T) {
	e := startServer(t, false)
	for _, tt := range []struct {
		role         roles.Role
		wantRedacted bool
	}{
		{roles.Admin, false},
		{roles.Operator, true},
		{roles.Reader, true},
	} {
		t.Run(string(tt.role), func(t *testing.T) {
			cc := dial(t, e.addr, withCert(roleCert(string(tt.role)))(t, e))
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			resp, err := machine.NewMachineServiceClient(cc).GetConfig(ctx, &machine.GetConfigRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetRedacted() != tt.wantRedacted {
				t.Errorf("GetConfig as %s: redacted = %v, want %v", tt.role, resp.GetRedacted(), tt.wantRedacted)
			}
			if got := strings.Contains(string(resp.GetData()), "secret"); got == tt.wantRedacted {
				t.Errorf("GetConfig as %s returned %q", tt.role, resp.GetData())
			}
		})
	}
}
