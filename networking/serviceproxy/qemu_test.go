//go:build linux

package serviceproxy

import (
	"os"
	"testing"
	"time"

	"github.com/kiln-os/kiln/tools/qemu/vmtest"
)

// inKernelTests are the privileged datapath tests TestQemuServiceProxyInKernel runs
// in a guest with the kernel a node boots: the cgroup sock_addr programs
// (ClusterIP TCP/UDP over v4, v6 and v4-mapped, no endpoints refused, affinity),
// restart with pinned links, upgrades of pinned maps, the TCX NodePort programs with
// real IPv4 and IPv6 traffic over veth (including the Local policy) and the TC
// programs under BPF_PROG_TEST_RUN (Maglev included, with the verifier's
// instruction counts logged).
var inKernelTests = []string{
	"TestClusterIP",
	"TestRestart",
	"TestOpenRejectsNonBPFFS",
	"TestOpenReplacesOldLayout",
	"TestOpenUpgradesLayout2",
	"TestNodePort",
	"TestTCPrograms",
	"TestTCMaglev",
	"TestOpenSwitchesExternalLB",
	"TestTCVerifierStats",
}

// inKernelModules are what inKernelTests need beyond the built-ins of Debian's
// configuration (BPF syscall and JIT, cgroup BPF, cgroup2, bpffs, TCX; TCX needs no
// qdisc): veth for the NodePort topology. generic-amd64's kernel has it built in.
var inKernelModules = []string{"veth"}

// TestQemuServiceProxyInKernel builds this package's tests for amd64 and arm64, boots
// the kernel a node of each boots in QEMU (generic-amd64: Kiln's build; generic-arm64:
// Debian's, the Raspberry Pi's kind, with its arm64 JIT), with the board's command
// line, runs inKernelTests there as root and requires each to pass, not skip: the
// verifier of that kernel accepts the programs and they
// balance, translate and survive restarts there, not only on the build host's newer
// kernel. In the guest, the tests make their own sandbox as on the host (TestMain's
// private network and mount namespaces, a private bpffs and cgroup2 mount, a child
// cgroup).
func TestQemuServiceProxyInKernel(t *testing.T) {
	if os.Getenv(vmtest.GuestEnv) == "1" {
		t.Skip("already inside a vmtest guest")
	}
	vmtest.RequirePassInNodeKernels(t, "github.com/kiln-os/kiln/networking/serviceproxy", inKernelTests, vmtest.Options{
		Modules: inKernelModules,
		Args:    []string{"-test.count=1"},
		// Hang protection: under TCG on a busy 2-core host the run takes minutes.
		Timeout: 15 * time.Minute,
	})
}
