package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/config/generate"
	"github.com/kiln-os/kiln/machined/config/secrets"
	"github.com/kiln-os/kiln/machined/events"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/machined/store"
	"github.com/kiln-os/kiln/machined/supervisor"
)

// hang protects tests against deadlocks; it is not a timing assertion.
const hang = 30 * time.Second

var (
	clusterOnce sync.Once
	clusterOut  *generate.Output
	clusterErr  error
)

// testCluster is one generated cluster shared by the tests (key generation
// is the slow part).
func testCluster(t *testing.T) *generate.Output {
	t.Helper()
	clusterOnce.Do(func() {
		b, err := secrets.NewBundle()
		if err != nil {
			clusterErr = err
			return
		}
		clusterOut, clusterErr = generate.Generate("test", "https://10.0.0.2:6443", b, generate.Options{})
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return clusterOut
}

// configBytes is the controlplane config of the test cluster, host name
// node-1, changed by mutate.
func configBytes(t *testing.T, mutate func(c *config.Config)) []byte {
	t.Helper()
	c := testCluster(t).ControlPlane.DeepCopy()
	c.Machine.Machine.Hostname = "node-1"
	if mutate != nil {
		mutate(c)
	}
	data, err := c.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func withHostname(name string) func(*config.Config) {
	return func(c *config.Config) { c.Machine.Machine.Hostname = name }
}

// sleeper is an extension service that runs until stopped.
func sleeper(name string, args ...string) *config.ServiceConfig {
	if len(args) == 0 {
		args = []string{"3600"}
	}
	return &config.ServiceConfig{
		APIVersion: config.APIVersion,
		Kind:       config.KindServiceConfig,
		Name:       name,
		Command:    sleepPath,
		Args:       args,
		Restart:    config.RestartAlways,
	}
}

const sleepPath = "/bin/sleep"

func needSleep(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(sleepPath); err != nil {
		t.Skipf("needs %s to run extension services: %v", sleepPath, err)
	}
}

func withServices(svcs ...*config.ServiceConfig) func(*config.Config) {
	return func(c *config.Config) { c.Services = svcs }
}

// startDaemon starts a daemon on root, listening on 127.0.0.1:0, stopped
// at the end of the test.
func startDaemon(t *testing.T, root string) *Daemon {
	t.Helper()
	return startDaemonWith(t, root, nil)
}

// startDaemonWith is startDaemon with options changed by opt (nil: none).
func startDaemonWith(t *testing.T, root string, opt func(*Options)) *Daemon {
	t.Helper()
	o := Options{
		Root:     root,
		Listen:   "127.0.0.1:0",
		Logger:   slog.New(slog.DiscardHandler),
		SysBlock: t.TempDir(),
	}
	if opt != nil {
		opt(&o)
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })
	return d
}

func stopDaemon(t *testing.T, d *Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func serverApply(data []byte) server.ApplyRequest {
	return server.ApplyRequest{Data: data}
}

func apply(t *testing.T, d *Daemon, data []byte, mode machine.ApplyMode) *server.ApplyResult {
	t.Helper()
	res, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: data, Mode: mode})
	if err != nil {
		t.Fatalf("ApplyConfiguration(%s): %v", mode, err)
	}
	return res
}

// inForce returns the configuration in force, nil in maintenance mode.
func inForce(t *testing.T, d *Daemon) []byte {
	t.Helper()
	st, err := d.Config(context.Background(), false)
	if errors.Is(err, server.ErrPrecondition) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return st.Data
}

func stored(t *testing.T, root string) []byte {
	t.Helper()
	s, err := store.Open(stateDir(root), nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := s.Load()
	if errors.Is(err, store.ErrNoConfig) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// waitFor polls cond until it holds; the deadline only guards against a
// hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func running(d *Daemon) []string {
	var ids []string
	for _, st := range d.sup.List() {
		if st.State == supervisor.Running {
			ids = append(ids, st.ID)
		}
	}
	return ids
}

func waitRunning(t *testing.T, d *Daemon, want ...string) {
	t.Helper()
	waitFor(t, "services "+cmp.Diff(want, running(d)), func() bool { return slices.Equal(running(d), want) })
}

// waitEvent waits for an event of type typ on a subscription.
func waitEvent(t *testing.T, sub *events.Subscription, typ string) events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for {
		evs, _, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for event %s: %v", typ, err)
		}
		for _, e := range evs {
			if e.Type == typ {
				return e
			}
		}
	}
}

// dialAPI connects to the daemon's API: as admin with the cluster's
// certificate, or insecure (maintenance-mode style) when admin is false.
func dialAPI(t *testing.T, d *Daemon, admin bool) machine.MachineServiceClient {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true}
	if admin {
		out := testCluster(t)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(out.CACrt)
		pair, err := tls.X509KeyPair(out.AdminCrt, out.AdminKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}
	}
	cc, err := grpc.NewClient(d.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return machine.NewMachineServiceClient(cc)
}

func TestApplyInMaintenanceOverTheAPI(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	insecure := dialAPI(t, d, false)

	v, err := insecure.Version(ctx, &machine.VersionRequest{})
	if err != nil {
		t.Fatalf("Version in maintenance mode: %v", err)
	}
	if !v.GetMaintenance() || v.GetPlatform() != PlatformProcess {
		t.Errorf("Version = %v, want maintenance on platform %q", v, PlatformProcess)
	}
	if _, err := insecure.GetConfig(ctx, &machine.GetConfigRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("GetConfig in maintenance mode: %v, want FailedPrecondition", err)
	}

	// Any mode but STAGED and TRY applies at once in maintenance mode.
	resp, err := insecure.ApplyConfiguration(ctx, &machine.ApplyConfigurationRequest{
		Data: configBytes(t, nil),
		Mode: machine.ApplyMode_APPLY_MODE_REBOOT,
	})
	if err != nil {
		t.Fatalf("ApplyConfiguration in maintenance mode: %v", err)
	}
	if resp.GetMode() != machine.ApplyMode_APPLY_MODE_NO_REBOOT || resp.GetRebootRequired() || resp.GetDiff() == "" {
		t.Errorf("ApplyConfiguration = %v, want NO_REBOOT without reboot, with a diff", resp)
	}

	if _, err := insecure.Version(ctx, &machine.VersionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("insecure Version after the apply: %v, want Unauthenticated", err)
	}
	// The node certificate now chains to the machine CA and names 127.0.0.1.
	admin := dialAPI(t, d, true)
	v, err = admin.Version(ctx, &machine.VersionRequest{})
	if err != nil {
		t.Fatalf("admin Version after the apply: %v", err)
	}
	if v.GetMaintenance() || v.GetHostname() != "node-1" {
		t.Errorf("Version = %v, want configured with host name node-1", v)
	}
	got, err := admin.GetConfig(ctx, &machine.GetConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(configBytes(t, nil)), string(got.GetData())); diff != "" || got.GetRedacted() {
		t.Errorf("GetConfig as admin (redacted %v) (-want +got):\n%s", got.GetRedacted(), diff)
	}
	if got.GetChecksum() != checksum(configBytes(t, nil)) {
		t.Errorf("GetConfig checksum = %s, want %s", got.GetChecksum(), checksum(configBytes(t, nil)))
	}
}

// TestBeforeActivate checks when BeforeActivate runs (a node mounts EPHEMERAL and
// waits for the late modules there): before a configuration first comes into force,
// whether applied in maintenance mode or stored, and neither in maintenance mode
// itself nor for later applies.
func TestBeforeActivate(t *testing.T) {
	root := t.TempDir()
	var calls atomic.Int32
	// The first call waits for release: an apply in maintenance mode prepares
	// without the daemon's lock, so other calls are answered meanwhile.
	entered, release := make(chan struct{}, 1), make(chan struct{})
	hook := func(o *Options) {
		o.BeforeActivate = func() {
			if calls.Add(1) == 1 {
				entered <- struct{}{}
				<-release
			}
		}
	}
	check := func(when string, want int32) {
		t.Helper()
		if got := calls.Load(); got != want {
			t.Errorf("%s: BeforeActivate ran %d times, want %d", when, got, want)
		}
	}
	d := startDaemonWith(t, root, hook)
	check("started in maintenance mode", 0)
	data := configBytes(t, nil)
	if _, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: data, DryRun: true}); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	check("dry run", 0)

	applied := make(chan error, 1)
	go func() {
		_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: data, Mode: machine.ApplyMode_APPLY_MODE_AUTO})
		applied <- err
	}()
	<-entered
	answered := make(chan error, 1)
	go func() {
		_, err := d.Version(context.Background())
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Errorf("Version while the first apply prepares: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Version waited for the first apply's BeforeActivate: it runs under the daemon's lock")
	}
	close(release)
	if err := <-applied; err != nil {
		t.Fatalf("first apply: %v", err)
	}
	check("first apply", 1)
	apply(t, d, data, machine.ApplyMode_APPLY_MODE_AUTO)
	check("second apply", 1)
	stopDaemon(t, d)

	startDaemonWith(t, root, hook)
	check("restarted with the stored configuration", 2)
}

func TestMaintenanceFingerprintIsStable(t *testing.T) {
	root := t.TempDir()
	d1 := startDaemon(t, root)
	fp := d1.MaintenanceFingerprint()
	stopDaemon(t, d1)
	d2 := startDaemon(t, root)
	if got := d2.MaintenanceFingerprint(); got != fp || len(got) != 64 {
		t.Errorf("fingerprint after restart = %q, want %q", got, fp)
	}
}

// TestInterruptedIdentityWriteRemoved: a temporary file of the maintenance
// certificate's write that was cut off (it holds a private key) is gone after the
// next start, and the certificate in place is kept.
func TestInterruptedIdentityWriteRemoved(t *testing.T) {
	root := t.TempDir()
	d1 := startDaemon(t, root)
	fp := d1.MaintenanceFingerprint()
	stopDaemon(t, d1)
	left := filepath.Join(identityDir(stateDir(root)), ".maintenance.pem.tmp-4242")
	if err := os.WriteFile(left, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, root)
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the interrupted write's temporary file is still there: %v", err)
	}
	if got := d2.MaintenanceFingerprint(); got != fp {
		t.Errorf("fingerprint after restart = %q, want %q", got, fp)
	}
}

func TestTryInMaintenanceRefused(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: configBytes(t, nil), Mode: machine.ApplyMode_APPLY_MODE_TRY})
	if !errors.Is(err, server.ErrPrecondition) {
		t.Errorf("TRY in maintenance mode: %v, want ErrPrecondition", err)
	}
	if inForce(t, d) != nil || stored(t, root) != nil {
		t.Error("a refused TRY changed the configuration")
	}
}

func TestInvalidConfigChangesNothing(t *testing.T) {
	needSleep(t)
	root := t.TempDir()
	d := startDaemon(t, root)
	good := configBytes(t, withServices(sleeper("web")))
	apply(t, d, good, machine.ApplyMode_APPLY_MODE_AUTO)
	waitRunning(t, d, "web")

	t.Run("invalid", func(t *testing.T) {
		_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{
			Data: []byte("apiVersion: kiln.dev/v1alpha1\nkind: MachineConfig\nmachine: {type: bogus}\n"),
		})
		var cfgErr *config.Error
		if !errors.As(err, &cfgErr) || len(cfgErr.Problems) < 2 {
			t.Errorf("apply of an invalid config: %v, want a *config.Error listing its problems", err)
		}
	})
	t.Run("reconcile fails", func(t *testing.T) {
		// Valid (containerd is a Kiln service), but process mode has no
		// containerd: the supervisor refuses, and everything is restored.
		dep := sleeper("db")
		dep.DependsOn = []string{"containerd"}
		bad := configBytes(t, func(c *config.Config) {
			c.Machine.Machine.Hostname = "changed"
			c.Services = []*config.ServiceConfig{dep}
		})
		_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: bad})
		if err == nil {
			t.Fatal("apply of a config whose services cannot run succeeded")
		}
		var cfgErr *config.Error
		if errors.As(err, &cfgErr) {
			t.Errorf("reconcile failure reported as a config error: %v", err)
		}
		if d.Hostname() != "node-1" {
			t.Errorf("host name after the failed apply = %q, want node-1", d.Hostname())
		}
	})
	if diff := cmp.Diff(string(good), string(inForce(t, d))); diff != "" {
		t.Errorf("configuration in force changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(string(good), string(stored(t, root))); diff != "" {
		t.Errorf("stored configuration changed (-want +got):\n%s", diff)
	}
	waitRunning(t, d, "web")
}

func TestDryRunChangesNothing(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	for _, mode := range []machine.ApplyMode{machine.ApplyMode_APPLY_MODE_AUTO, machine.ApplyMode_APPLY_MODE_STAGED} {
		res, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: configBytes(t, nil), Mode: mode, DryRun: true})
		if err != nil {
			t.Fatalf("dry run in maintenance mode: %v", err)
		}
		if res.Diff == "" {
			t.Error("dry run from maintenance mode has no diff")
		}
	}
	if inForce(t, d) != nil || stored(t, root) != nil || d.store.HasStaged() || !d.srv.Maintenance() {
		t.Fatal("a dry run left maintenance mode")
	}

	good := configBytes(t, nil)
	apply(t, d, good, machine.ApplyMode_APPLY_MODE_AUTO)
	renamed := configBytes(t, func(c *config.Config) { c.Machine.Cluster.Name = "other" })
	res, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: renamed, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.RebootRequired || res.Mode != machine.ApplyMode_APPLY_MODE_REBOOT || res.Diff == "" {
		t.Errorf("dry run of a reboot change = %+v, want REBOOT with a diff", res)
	}
	if a := d.powerRequested(); a != PowerNone {
		t.Errorf("a dry run asked for power action %v", a)
	}
	if !slices.Equal(inForce(t, d), good) || !slices.Equal(stored(t, root), good) {
		t.Error("a dry run changed the configuration")
	}
}

func TestNoRebootRefusedWhenRebootRequired(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	good := configBytes(t, nil)
	apply(t, d, good, machine.ApplyMode_APPLY_MODE_AUTO)
	renamed := configBytes(t, func(c *config.Config) { c.Machine.Cluster.Name = "other" })

	for _, mode := range []machine.ApplyMode{machine.ApplyMode_APPLY_MODE_NO_REBOOT, machine.ApplyMode_APPLY_MODE_TRY} {
		_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{Data: renamed, Mode: mode})
		if !errors.Is(err, server.ErrRebootRequired) {
			t.Errorf("%s apply of a reboot change: %v, want ErrRebootRequired", mode, err)
		}
	}
	if !slices.Equal(inForce(t, d), good) || !slices.Equal(stored(t, root), good) {
		t.Fatal("a refused apply changed the configuration")
	}

	// A live change goes through NO_REBOOT.
	res := apply(t, d, configBytes(t, withHostname("node-2")), machine.ApplyMode_APPLY_MODE_NO_REBOOT)
	if res.RebootRequired || d.Hostname() != "node-2" {
		t.Errorf("live apply: %+v, host name %q", res, d.Hostname())
	}

	// AUTO stores the reboot change and reboots.
	res = apply(t, d, renamed, machine.ApplyMode_APPLY_MODE_AUTO)
	if res.Mode != machine.ApplyMode_APPLY_MODE_REBOOT || !res.RebootRequired {
		t.Errorf("AUTO apply of a reboot change = %+v, want REBOOT", res)
	}
	if !slices.Equal(stored(t, root), renamed) {
		t.Error("AUTO apply of a reboot change did not store it")
	}
	select {
	case a := <-d.PowerRequests():
		if a != PowerReboot {
			t.Errorf("power action = %v, want reboot", a)
		}
	case <-time.After(hang):
		t.Fatal("AUTO apply of a reboot change did not reboot")
	}
}

func TestStagedTakenAtNextStart(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	first := configBytes(t, nil)
	apply(t, d, first, machine.ApplyMode_APPLY_MODE_AUTO)
	next := configBytes(t, withHostname("node-2"))
	res := apply(t, d, next, machine.ApplyMode_APPLY_MODE_STAGED)
	if res.Mode != machine.ApplyMode_APPLY_MODE_STAGED {
		t.Errorf("mode = %s, want STAGED", res.Mode)
	}
	st, err := d.Config(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !st.StagedPending || d.Hostname() != "node-1" {
		t.Errorf("after staging: staged pending %v, host name %q; want true, node-1", st.StagedPending, d.Hostname())
	}
	stopDaemon(t, d)

	d2 := startDaemon(t, root)
	if diff := cmp.Diff(string(next), string(inForce(t, d2))); diff != "" {
		t.Errorf("after restart, in force (-want +got):\n%s", diff)
	}
	if d2.store.HasStaged() || d2.Hostname() != "node-2" {
		t.Errorf("after restart: staged %v, host name %q; want false, node-2", d2.store.HasStaged(), d2.Hostname())
	}
}

func TestTryRollsBack(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	first := configBytes(t, nil)
	apply(t, d, first, machine.ApplyMode_APPLY_MODE_AUTO)
	sub := d.Events().Subscribe(0)
	defer sub.Close()

	tried := configBytes(t, withHostname("tried"))
	_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{
		Data: tried, Mode: machine.ApplyMode_APPLY_MODE_TRY, TryTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// In force at once, never stored.
	if !slices.Equal(stored(t, root), first) {
		t.Error("a TRY apply was stored")
	}
	waitEvent(t, sub, "config.try")
	waitEvent(t, sub, "config.rollback")
	if diff := cmp.Diff(string(first), string(inForce(t, d))); diff != "" {
		t.Errorf("after the rollback, in force (-want +got):\n%s", diff)
	}
	if d.Hostname() != "node-1" {
		t.Errorf("host name after the rollback = %q, want node-1", d.Hostname())
	}
	if _, err := d.ConfirmConfiguration(context.Background()); !errors.Is(err, server.ErrPrecondition) {
		t.Errorf("Confirm after the rollback: %v, want ErrPrecondition", err)
	}
}

func TestTrySticksWhenConfirmed(t *testing.T) {
	root := t.TempDir()
	d := startDaemon(t, root)
	apply(t, d, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_AUTO)
	if _, err := d.ConfirmConfiguration(context.Background()); !errors.Is(err, server.ErrPrecondition) {
		t.Errorf("Confirm with nothing to confirm: %v, want ErrPrecondition", err)
	}
	tried := configBytes(t, withHostname("tried"))
	_, err := d.ApplyConfiguration(context.Background(), server.ApplyRequest{
		Data: tried, Mode: machine.ApplyMode_APPLY_MODE_TRY, TryTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.Hostname() != "tried" {
		t.Errorf("host name during TRY = %q, want tried", d.Hostname())
	}
	if _, err := d.ConfirmConfiguration(context.Background()); err != nil {
		t.Fatalf("Confirm: %v", err)
	}
	if !slices.Equal(stored(t, root), tried) {
		t.Error("the confirmed configuration was not stored")
	}
	stopDaemon(t, d)
	d2 := startDaemon(t, root)
	if d2.Hostname() != "tried" {
		t.Errorf("after restart, host name = %q, want tried", d2.Hostname())
	}
}

func TestServicesFollowTheConfig(t *testing.T) {
	needSleep(t)
	root := t.TempDir()
	d := startDaemon(t, root)
	sub := d.Events().Subscribe(0)
	defer sub.Close()

	apply(t, d, configBytes(t, withServices(sleeper("web"), sleeper("worker"))), machine.ApplyMode_APPLY_MODE_AUTO)
	waitRunning(t, d, "web", "worker")
	waitEvent(t, sub, "service.state")
	pid := func(id string) int {
		for _, st := range d.sup.List() {
			if st.ID == id {
				return st.PID
			}
		}
		return 0
	}
	webPID, workerPID := pid("web"), pid("worker")
	list, err := d.Services(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range list {
		if st.Kind != supervisor.KindExtension {
			t.Errorf("service %s kind = %q, want %q", st.ID, st.Kind, supervisor.KindExtension)
		}
	}

	// worker changes, web goes, db comes.
	apply(t, d, configBytes(t, withServices(sleeper("worker", "3601"), sleeper("db"))), machine.ApplyMode_APPLY_MODE_NO_REBOOT)
	waitRunning(t, d, "db", "worker")
	waitFor(t, "worker restarted with its new spec", func() bool { p := pid("worker"); return p != 0 && p != workerPID })
	if pid("web") != 0 {
		t.Errorf("web still has PID %d (was %d) after its removal", pid("web"), webPID)
	}

	// The restart of a service over the Machine interface.
	if err := d.RestartService(context.Background(), "nope"); !errors.Is(err, supervisor.ErrNotFound) {
		t.Errorf("RestartService(nope) = %v, want ErrNotFound", err)
	}
	if _, err := d.ServiceLog(context.Background(), "db"); err != nil {
		t.Errorf("ServiceLog(db): %v", err)
	}
}

func TestRestartRestoresConfigAndServices(t *testing.T) {
	needSleep(t)
	root := t.TempDir()
	d := startDaemon(t, root)
	data := configBytes(t, withServices(sleeper("web")))
	apply(t, d, data, machine.ApplyMode_APPLY_MODE_AUTO)
	waitRunning(t, d, "web")
	stopDaemon(t, d)
	if got := running(d); len(got) != 0 {
		t.Errorf("services still running after Stop: %v", got)
	}

	d2 := startDaemon(t, root)
	if d2.srv.Maintenance() {
		t.Fatal("restarted daemon is in maintenance mode")
	}
	if !slices.Equal(inForce(t, d2), data) {
		t.Error("restarted daemon lost its configuration")
	}
	waitRunning(t, d2, "web")
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if _, err := dialAPI(t, d2, true).Version(ctx, &machine.VersionRequest{}); err != nil {
		t.Errorf("admin Version on the restarted daemon: %v", err)
	}
}

func TestRebootAndShutdownEndRun(t *testing.T) {
	for _, tt := range []struct {
		name string
		call func(context.Context, machine.MachineServiceClient) error
		want error
	}{
		{"reboot", func(ctx context.Context, c machine.MachineServiceClient) error {
			_, err := c.Reboot(ctx, &machine.RebootRequest{})
			return err
		}, ErrReboot},
		{"shutdown", func(ctx context.Context, c machine.MachineServiceClient) error {
			_, err := c.Shutdown(ctx, &machine.ShutdownRequest{})
			return err
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			// Configure the node first, so that admin may call Reboot.
			d0 := startDaemon(t, root)
			apply(t, d0, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_AUTO)
			stopDaemon(t, d0)

			d, err := New(Options{Root: root, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			ready := d.Events().Subscribe(-1)
			defer ready.Close()
			done := make(chan error, 1)
			go func() { done <- d.Run(ctx) }()
			waitEvent(t, ready, "machine.ready")
			if err := tt.call(ctx, dialAPI(t, d, true)); err != nil {
				t.Fatalf("%s over the API: %v", tt.name, err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
					t.Errorf("Run after %s = %v, want %v", tt.name, err, tt.want)
				}
			case <-ctx.Done():
				t.Fatalf("Run did not return after %s", tt.name)
			}
		})
	}
}

// TestAPIListensOnPlainTCP: the API socket is TCP, not the Multipath TCP that Go
// asks for by default (on a kernel without MPTCP both are TCP, and this passes
// either way; Debian's kernels have it).
func TestAPIListensOnPlainTCP(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	sc, err := d.lis.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	var serr error
	if err := sc.Control(func(fd uintptr) {
		proto, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_PROTOCOL: %v", serr)
	}
	if proto != unix.IPPROTO_TCP {
		t.Errorf("API socket protocol = %d, want %d (TCP; %d is MPTCP)", proto, unix.IPPROTO_TCP, unix.IPPROTO_MPTCP)
	}
}
