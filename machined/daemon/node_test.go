package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/machined/server"
	"github.com/kiln-os/kiln/networking/link"
)

// syncBuffer is a console that tests read while the daemon writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeNetwork records what the daemon asked of the host network.
type fakeNetwork struct {
	mu    sync.Mutex
	calls []*config.Config
}

func (f *fakeNetwork) Reconcile(_ context.Context, cfg *config.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cfg)
	return nil
}

func (f *fakeNetwork) WaitAddress(context.Context) bool { return true }

// fakeHostname records the kernel host names set.
type fakeHostname struct {
	mu    sync.Mutex
	names []string
}

func (f *fakeHostname) SetHostname(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name)
	return nil
}

// readyRE is the readiness line as the package documentation promises it.
var readyRE = regexp.MustCompile(`(?m)^\[kiln\] ready api=(\S+) mode=(maintenance|configured) fingerprint=sha256:([0-9a-f]{64}) addrs=(\S+) hostname=(\S+) platform=(node|process) cpu=(\S+) uptime=(\S+)$`)

// TestNodeSeamsInMaintenance: a node-like daemon (every seam but the disks)
// applies the fallback host name and the maintenance network, prints the
// instructions and the readiness line, and reports platform node.
func TestNodeSeamsInMaintenance(t *testing.T) {
	dir := t.TempDir()
	console := &syncBuffer{}
	net := &fakeNetwork{}
	host := &fakeHostname{}
	d, err := New(Options{
		Platform:         PlatformNode,
		StateDir:         filepath.Join(dir, "state"),
		LogDir:           filepath.Join(dir, "log"),
		RunDir:           filepath.Join(dir, "run"),
		Listen:           "127.0.0.1:0",
		Logger:           slog.New(slog.DiscardHandler),
		Console:          console,
		Hostname:         host,
		FallbackHostname: "kiln-123456",
		Network:          net,
		SysBlock:         t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })

	out := console.String()
	m := readyRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("console has no readiness line:\n%s", out)
	}
	want := []string{d.Addr().String(), "maintenance", d.MaintenanceFingerprint(), "127.0.0.1", "kiln-123456", "node"}
	if diff := cmp.Diff(want, m[1:7]); diff != "" {
		t.Errorf("readiness line fields (-want +got):\n%s", diff)
	}
	// The test process has used some CPU time by now.
	if cpu, err := time.ParseDuration(m[7]); err != nil || cpu <= 0 {
		t.Errorf("readiness line cpu=%q, want the CPU time used so far", m[7])
	}
	// The host has been up for longer than the test has run.
	if up, err := time.ParseDuration(m[8]); err != nil || up <= 0 {
		t.Errorf("readiness line uptime=%q, want the time since the kernel started", m[8])
	}
	for _, line := range []string{
		"[kiln]   fingerprint: sha256:" + d.MaintenanceFingerprint(),
		"[kiln]   apply one:   kctl apply-config --insecure -n 127.0.0.1 -f controlplane.yaml",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("console lacks %q:\n%s", line, out)
		}
	}
	host.mu.Lock()
	if diff := cmp.Diff([]string{"kiln-123456"}, host.names); diff != "" {
		t.Errorf("kernel host names (-want +got):\n%s", diff)
	}
	host.mu.Unlock()
	net.mu.Lock()
	if len(net.calls) != 1 || net.calls[0] != nil {
		t.Errorf("network reconciled with %v, want once with nil (maintenance)", net.calls)
	}
	net.mu.Unlock()
	v, err := d.Version(ctx)
	if err != nil || v.Platform != PlatformNode || v.Hostname != "kiln-123456" {
		t.Errorf("Version = %+v, %v; want platform node, host name kiln-123456", v, err)
	}

	// A configuration with a host name replaces the fallback and reaches the
	// network.
	apply(t, d, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_AUTO)
	host.mu.Lock()
	if diff := cmp.Diff([]string{"kiln-123456", "node-1"}, host.names); diff != "" {
		t.Errorf("kernel host names after apply (-want +got):\n%s", diff)
	}
	host.mu.Unlock()
	net.mu.Lock()
	if len(net.calls) != 2 || net.calls[1] == nil {
		t.Errorf("network not reconciled with the applied configuration: %v", net.calls)
	}
	net.mu.Unlock()
}

// TestSeedFromImage: a config.yaml the image builder put on STATE becomes the
// stored configuration at the first start and is removed.
func TestSeedFromImage(t *testing.T) {
	root := t.TempDir()
	data := configBytes(t, nil)
	if err := os.MkdirAll(stateDir(root), 0o700); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(stateDir(root), seedName)
	if err := os.WriteFile(seed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, root)
	if got := inForce(t, d); !bytes.Equal(got, data) {
		t.Errorf("configuration in force = %q, want the seed", got)
	}
	if got := stored(t, root); !bytes.Equal(got, data) {
		t.Error("the seed was not stored")
	}
	if _, err := os.Stat(seed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the seed is still on STATE: %v", err)
	}
}

func TestInvalidSeedIsSetAside(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(stateDir(root), 0o700); err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(stateDir(root), seedName)
	if err := os.WriteFile(seed, []byte("machine: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, root)
	if got := inForce(t, d); got != nil {
		t.Errorf("an invalid seed is in force: %q", got)
	}
	if _, err := os.Stat(seed + ".invalid"); err != nil {
		t.Errorf("the invalid seed was not set aside: %v", err)
	}
}

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:C350 0202000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`

const procNetTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:C350 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
`

const procNetUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0000000000000000 0
  101: 0F02000A:A1B2 0302000A:0035 01 00000000:00000000 00:00000000 00000000     0        0 5 2 0000000000000000 0
`

const procNetUDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  200: 00000000000000000000000001000000:0222 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6 2 0000000000000000 0
`

func TestMountsAndNetstat(t *testing.T) {
	dir := t.TempDir()
	procNet := filepath.Join(dir, "net")
	if err := os.Mkdir(procNet, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"tcp": procNetTCP, "tcp6": procNetTCP6, "udp": procNetUDP, "udp6": procNetUDP6} {
		if err := os.WriteFile(filepath.Join(procNet, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mounts := filepath.Join(dir, "mounts")
	if err := os.WriteFile(mounts, []byte("/dev/loop0 / squashfs ro,relatime 0 0\n/dev/vda4 /var ext4 rw,nosuid,nodev,noatime 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Root: dir, MountsPath: mounts, ProcNet: procNet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gotMounts, err := d.Mounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantMounts := []server.Mount{
		{Source: "/dev/loop0", Target: "/", FSType: "squashfs", Options: "ro,relatime"},
		{Source: "/dev/vda4", Target: "/var", FSType: "ext4", Options: "rw,nosuid,nodev,noatime"},
	}
	if diff := cmp.Diff(wantMounts, gotMounts); diff != "" {
		t.Errorf("Mounts (-want +got):\n%s", diff)
	}
	gotSocks, err := d.Netstat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSocks := []server.Socket{
		{Protocol: "tcp", Local: netip.MustParseAddrPort("0.0.0.0:50000"), State: "LISTEN"},
		{Protocol: "tcp6", Local: netip.MustParseAddrPort("[::]:50000"), State: "LISTEN"},
		{Protocol: "udp", Local: netip.MustParseAddrPort("0.0.0.0:68")},
		{Protocol: "udp6", Local: netip.MustParseAddrPort("[::1]:546")},
	}
	if diff := cmp.Diff(wantSocks, gotSocks, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("Netstat (-want +got):\n%s", diff)
	}

	// The host's own tables parse too.
	real, err := New(Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Netstat(ctx); err != nil {
		t.Errorf("Netstat on /proc/net: %v", err)
	}
	if _, err := real.Mounts(ctx); err != nil {
		t.Errorf("Mounts on /proc/self/mounts: %v", err)
	}
}

// TestNetstatSeesOwnListener: a socket this test opens shows up.
func TestNetstatSeesOwnListener(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	d, err := New(Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	socks, err := d.Netstat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[server.Socket]bool{
		{Protocol: "tcp", Local: netip.MustParseAddrPort(l.Addr().String()), State: "LISTEN"}: false,
		{Protocol: "udp", Local: netip.MustParseAddrPort(u.LocalAddr().String())}:             false,
	}
	for _, s := range socks {
		if _, ok := want[s]; ok {
			want[s] = true
		}
	}
	for s, seen := range want {
		if !seen {
			t.Errorf("Netstat lacks %+v", s)
		}
	}
}

func TestDebugAction(t *testing.T) {
	for _, tt := range []struct {
		name    string
		enabled bool
		action  string
		want    codes.Code
		exit    int // -1: no exit
	}{
		{"disabled", false, "crash", codes.FailedPrecondition, -1},
		{"unknown", true, "explode", codes.InvalidArgument, -1},
		{"crash", true, "crash", codes.OK, crashExitCode},
	} {
		t.Run(tt.name, func(t *testing.T) {
			exited := make(chan int, 1)
			root := t.TempDir()
			// Configure the node first, so that admin may call DebugAction.
			d0 := startDaemon(t, root)
			apply(t, d0, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_AUTO)
			stopDaemon(t, d0)
			d, err := New(Options{
				Root: root, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
				DebugActions: tt.enabled, Exit: func(code int) { exited <- code },
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), hang)
			defer cancel()
			if err := d.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stopDaemon(t, d) })
			_, err = dialAPI(t, d, true).DebugAction(ctx, &machine.DebugActionRequest{Action: tt.action})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("DebugAction(%q) = %v, want code %s", tt.action, err, tt.want)
			}
			if tt.exit < 0 {
				return
			}
			select {
			case code := <-exited:
				if code != tt.exit {
					t.Errorf("exit code %d, want %d", code, tt.exit)
				}
			case <-ctx.Done():
				t.Fatal("machined did not exit after crash")
			}
		})
	}
}

// TestPowerSeam: with a Power seam (a node), Run hands it the action after
// stopping and returns no ErrReboot.
func TestPowerSeam(t *testing.T) {
	root := t.TempDir()
	d0 := startDaemon(t, root)
	apply(t, d0, configBytes(t, nil), machine.ApplyMode_APPLY_MODE_AUTO)
	stopDaemon(t, d0)

	powered := make(chan PowerAction, 1)
	d, err := New(Options{Root: root, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler),
		Power: func(a PowerAction) error { powered <- a; return nil }})
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
	if _, err := dialAPI(t, d, true).Reboot(ctx, &machine.RebootRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after a reboot with a Power seam = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return")
	}
	select {
	case a := <-powered:
		if a != PowerReboot {
			t.Errorf("power action %v, want reboot", a)
		}
	default:
		t.Error("the Power seam was not called")
	}
}

func TestHostnameFromLinks(t *testing.T) {
	mac := func(s string) net.HardwareAddr {
		m, err := net.ParseMAC(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tt := range []struct {
		name  string
		links []link.Link
		want  string
	}{
		{"none", nil, "kiln"},
		{"loopback only", []link.Link{{Name: "lo", Loopback: true, Type: "device"}}, "kiln"},
		{"first NIC", []link.Link{
			{Name: "lo", Loopback: true, Type: "device"},
			{Name: "eth0", Type: "device", HardwareAddr: mac("52:54:00:12:34:56")},
			{Name: "eth1", Type: "device", HardwareAddr: mac("52:54:00:ab:cd:ef")},
		}, "kiln-123456"},
		{"bridges are not NICs", []link.Link{
			{Name: "br0", Type: "bridge", HardwareAddr: mac("02:00:00:00:00:01")},
			{Name: "eth0", Type: "device", HardwareAddr: mac("52:54:00:ab:cd:ef")},
		}, "kiln-abcdef"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := HostnameFromLinks(tt.links); got != tt.want {
				t.Errorf("HostnameFromLinks = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCmdlineFlag(t *testing.T) {
	for cmdline, want := range map[string]bool{
		"console=ttyS0 quiet":                  false,
		"console=ttyS0 kiln.debug":             true,
		"kiln.debug=1":                         true,
		"kiln.debug=0":                         false,
		"kiln.debug=off":                       false,
		"kiln.debugger=1":                      false,
		"kiln.debug=1 kiln.debug=0":            false,
		"BOOT_IMAGE=/vmlinuz kiln.debug=yes x": true,
	} {
		if got := CmdlineFlag(cmdline, "kiln.debug"); got != want {
			t.Errorf("CmdlineFlag(%q) = %v, want %v", cmdline, got, want)
		}
	}
}

func TestReadinessLineFormat(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	got := ReadinessLine("[::]:50000", "maintenance", fp, []netip.Addr{netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("fec0::5054:ff:fe12:3456")}, "kiln-123456", PlatformNode, 1234567*time.Microsecond, 2345678*time.Microsecond)
	want := "[kiln] ready api=[::]:50000 mode=maintenance fingerprint=sha256:" + fp + " addrs=10.0.2.15,fec0::5054:ff:fe12:3456 hostname=kiln-123456 platform=node cpu=1.235s uptime=2.346s"
	if got != want {
		t.Errorf("ReadinessLine =\n%q, want\n%q", got, want)
	}
	if !readyRE.MatchString(got) {
		t.Errorf("%q does not match the documented expression", got)
	}
	if got := ReadinessLine("127.0.0.1:50000", "configured", fp, nil, "", PlatformProcess, 0, 0); !strings.Contains(got, " addrs=none hostname=none ") {
		t.Errorf("ReadinessLine without addresses or name = %q", got)
	}
}
