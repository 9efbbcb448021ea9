package vmtest

import (
	"bufio"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/tools/qemu"
)

// Flags of the guest-side tests; TestQemuBoot sets them.
var (
	guestFail    = flag.Bool("vmtest.fail", false, "TestGuestFails fails on purpose (set by TestQemuBoot in the guest)")
	guestModules = flag.String("vmtest.modules", "", "TestGuestEnvironment: comma-separated modules that must be loaded")
)

func TestParseOutput(t *testing.T) {
	for _, tc := range []struct {
		name, log, want string
	}{
		{
			name: "pass",
			log:  "kernel noise\r\nvminit: loaded 2 modules\r\nKILN-VMTEST-START /vmtest/test -test.v\r\n=== RUN   TestX\r\n--- PASS: TestX (0.00s)\r\nPASS\r\n\r\nKILN-VMTEST-RESULT exit=0\r\n[  1.0] reboot: Power down\r\n",
			want: "=== RUN   TestX\n--- PASS: TestX (0.00s)\nPASS\n",
		},
		{
			name: "partial last line",
			log:  "KILN-VMTEST-START /vmtest/test\nno newline at the end\nKILN-VMTEST-RESULT exit=1\n",
			want: "no newline at the end\n",
		},
		{
			name: "result on the same line",
			log:  "KILN-VMTEST-START /vmtest/test\nFAILKILN-VMTEST-RESULT exit=1\n",
			want: "FAIL\n",
		},
		{
			name: "no result line",
			log:  "KILN-VMTEST-START /vmtest/test\npanic: boom\n",
			want: "panic: boom\n",
		},
		{
			name: "never started",
			log:  "vminit: mount proc on /proc: invalid argument\nKILN-VMTEST-RESULT exit=-1\n",
			want: "",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, parseOutput(tc.log)); diff != "" {
				t.Errorf("parseOutput (-want +got):\n%s", diff)
			}
		})
	}
}

// TestQemuBoot runs this package's own tests in a guest: TestGuestEnvironment must
// pass (mounts, modules with their dependencies, lo, re-executable os.Args[0]) and
// TestGuestFails must fail, and the host must see both and the failure exit code.
func TestQemuBoot(t *testing.T) {
	arch := qemu.HostArch()
	bin := BuildTest(t, arch, "github.com/kiln-os/kiln/tools/qemu/vmtest")
	r := Boot(t, Options{
		Arch: arch,
		// 8021q pulls garp, mrp, stp and llc in.
		Modules: []string{"veth", "8021q"},
		Args: []string{"-test.run", "^(TestGuestEnvironment|TestGuestFails)$", "-test.v",
			"-vmtest.fail", "-vmtest.modules=veth,8021q,garp,mrp,stp,llc"},
	}, bin)
	t.Logf("guest output:\n%s", r.Output)
	if r.ExitCode != 1 {
		t.Errorf("exit code %d, want 1 (TestGuestFails fails)", r.ExitCode)
	}
	for _, re := range []string{
		`(?m)^--- PASS: TestGuestEnvironment `,
		`(?m)^--- FAIL: TestGuestFails `,
		`deliberate failure`,
	} {
		if !regexp.MustCompile(re).MatchString(r.Output) {
			t.Errorf("guest output lacks %s", re)
		}
	}
}

// TestGuestEnvironment checks, inside a vmtest guest, what PID 1 promises.
func TestGuestEnvironment(t *testing.T) {
	if os.Getenv(GuestEnv) != "1" {
		t.Skip("runs only inside a vmtest guest (TestQemuBoot boots one)")
	}
	if os.Getppid() != 1 || os.Geteuid() != 0 {
		t.Errorf("ppid %d euid %d, want a root child of PID 1", os.Getppid(), os.Geteuid())
	}
	if !filepath.IsAbs(os.Args[0]) {
		t.Errorf("os.Args[0] = %q, want an absolute path to re-execute", os.Args[0])
	}
	if _, err := os.Stat(os.Args[0]); err != nil {
		t.Errorf("os.Args[0]: %v", err)
	}

	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mounts := map[string]string{} // target → fstype
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 22 1 0:21 / /proc rw,… shared:… - proc proc rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, typ := strings.Fields(pre), strings.Fields(post)
		if ok && len(fields) >= 5 && len(typ) >= 1 {
			mounts[fields[4]] = typ[0]
		}
	}
	for target, typ := range map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/tmp": "tmpfs",
		"/run": "tmpfs", "/sys/fs/cgroup": "cgroup2",
	} {
		if mounts[target] != typ {
			t.Errorf("%s is %q, want %s", target, mounts[target], typ)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		t.Errorf("cgroup2: %v", err)
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "f"), []byte("x"), 0o644); err != nil {
		t.Errorf("write in t.TempDir(): %v", err)
	}

	for _, m := range strings.Split(*guestModules, ",") {
		if m == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/module", m)); err != nil {
			t.Errorf("module %s not loaded: %v", m, err)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on lo: %v", err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("lo is not up: %v", err)
	}
	c.Close()
}

// TestGuestFails fails on purpose in the guest, so TestQemuBoot can see that a guest
// failure reaches the host.
func TestGuestFails(t *testing.T) {
	if os.Getenv(GuestEnv) != "1" || !*guestFail {
		t.Skip("fails on purpose only inside a vmtest guest with -vmtest.fail (TestQemuBoot)")
	}
	t.Error("deliberate failure")
}
