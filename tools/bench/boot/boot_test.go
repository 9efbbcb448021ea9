// Package boot benchmarks how fast a Kiln node boots under QEMU (TCG): QEMU start →
// machined's readiness line and → the first successful machine API call (Version over
// the forwarded port, polled from QEMU's start), for direct kernel boot and UEFI disk
// boot. Each iteration also boots the floor: the same kernel, initramfs and disk layout
// with a trivial PID 1 that prints one line (images/internal/testinit), so
// extra-ready-ms and extra-api-ms are what Kiln's init and machined add (budget: 1.0 s).
// A third image splits the node's extra: Kiln's init with a stand-in for machined
// (internal/reach) that links machined's packages but only mounts STATE and brings the
// first link up once init has loaded their drivers. Per iteration, as medians:
// extra-reach-median-ms (reach − floor) is what the kernel's module insertions, Kiln's
// init and machined's Go start cost; machined-work-median-ms (node readiness − reach)
// what machined then does before its readiness line: DHCP, the maintenance certificate,
// the API server; first-call-median-ms (first answer − readiness) the first API call's
// cold cost. Each line also carries the guest's uptime= (the time since the kernel
// started), and the guest-* medians are the same differences in that clock: they leave
// out the firmware, the boot loader and QEMU's loading of the kernel, which are the same
// work for every image but the noisiest part of a UEFI boot (6–9 s under TCG whose
// swings go whole into a paired difference; alternating boots put the node's share of
// it at +0.04 and −0.17 s, medians of 8 and 12 rounds). guest-extra-api-median-ms is
// the first answer in that clock: the readiness line's uptime plus the host's time from
// the line to the answer, less the floor's uptime.
// banner-to-ready-median-ms and banner-to-api-median-ms are measured within each node
// boot, from the line Kiln's init prints first (its banner) to the readiness line and
// to the first answer: the kernel's boot before init, whose time varies by up to 0.8 s
// between boots on a loaded host, is not in them, and no second boot is. Init's banner
// comes 0.02–0.04 s later after the kernel's `Run /init` than the floor's line does
// (its Go start is a little longer), so they state Kiln's extra a little short.
// Run with
//
//	go test ./tools/bench/boot -run '^$' -bench Boot -benchtime 3x -count 1 -timeout 30m
//
// With KILN_BOOT_BASELINE naming the output directory of another build of the
// generic-amd64 image (raw and kernel formats; make bench-boot-ab builds one from a git
// revision), each iteration boots that image too, and baseline-ready-ms, baseline-api-ms
// and vs-baseline-ready-ms compare the two builds under the same host load (and
// guest-vs-baseline-ready-median-ms in the guest's clock, when the baseline's readiness
// line has uptime=; vs-baseline-banner-to-ready-median-ms from each boot's own banner;
// vs-baseline-api-median-ms, vs-baseline-banner-to-api-median-ms and
// baseline-first-call-median-ms the same for the first answer):
// the host's noise moves a single run by more than most changes to the boot.
// machined-cpu-ms (and baseline-machined-cpu-ms) is the CPU time machined has used by
// its readiness line: the host's load moves it less (two runs: 1.17 and 1.30 s, while
// the extra went from 1.28 to 1.44 s), so it judges changes to machined's own work.
package boot

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/boards"
	"github.com/kiln-os/kiln/images/build"
	"github.com/kiln-os/kiln/images/inputs"
	"github.com/kiln-os/kiln/images/kernel"
	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/tools/internal/benchstat"
	"github.com/kiln-os/kiln/tools/provision"
	"github.com/kiln-os/kiln/tools/qemu"
	"github.com/kiln-os/kiln/tools/qemu/qemutest"
)

// floorMarker is the line images/internal/testinit prints; reachMarker what
// internal/reach prints, or its failure. Both end with uptime= as the readiness line
// does (uptimeKey).
var (
	floorMarker = regexp.MustCompile(`KILN-IMAGE-BOOT-OK.*`)
	// initBanner is the first line Kiln's init prints (boot.Banner).
	initBanner  = regexp.MustCompile(`Kiln \S+ \(init, kernel `)
	reachMarker = regexp.MustCompile(`KILN-REACH-(OK|FAILED).*`)
	uptimeKey   = regexp.MustCompile(` uptime=(\S+)`)
)

// Hang protection only.
const wait = 5 * time.Minute

// image is one build: a disk and the kernel outputs beside it.
type image struct{ raw, kernel, initrd, cmdline string }

var env struct {
	skip        string
	kiln, floor image
	reach       image  // Kiln's init with internal/reach for machined
	baseline    *image // KILN_BOOT_BASELINE, when set
}

// baselineEnv names the output directory of a baseline build of the image.
const baselineEnv = "KILN_BOOT_BASELINE"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if flag.Lookup("test.bench").Value.String() == "" {
		return m.Run() // no benchmark asked for: nothing to build
	}
	root, err := qemutest.RepoRoot()
	if err != nil {
		env.skip = err.Error()
		return m.Run()
	}
	b := boards.GenericAMD64()
	inputsDir := filepath.Join(root, "_out", "cache")
	if _, err := exec.LookPath(qemu.Binary(qemu.AMD64)); err != nil {
		env.skip = fmt.Sprintf("needs %s (make setup)", qemu.Binary(qemu.AMD64))
	} else if _, _, err := qemu.Firmware(qemu.AMD64); err != nil {
		env.skip = fmt.Sprintf("needs UEFI firmware: %v", err)
	} else if err := inputs.NewStore(inputsDir, nil).Verify(b); err != nil {
		env.skip = fmt.Sprintf("needs the pinned inputs (make inputs): %v", err)
	} else if err := kernel.Ready(inputs.NewStore(inputsDir, nil), b); err != nil {
		env.skip = fmt.Sprintf("needs the built kernel: %v", err)
	}
	if env.skip != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kiln-bench-boot-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildImages(root, dir, inputsDir, b); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if d := os.Getenv(baselineEnv); d != "" {
		im, err := builtImage(d, b)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", baselineEnv, err)
			return 1
		}
		env.baseline = &im
	}
	return m.Run()
}

// builtImage is the image the builder wrote to dir for board b (raw and kernel formats).
func builtImage(dir string, b boards.Board) (image, error) {
	base := filepath.Join(dir, b.Name())
	cmdline, err := os.ReadFile(base + "-cmdline.txt")
	if err != nil {
		return image{}, err
	}
	im := image{raw: base + ".raw", kernel: base + "-vmlinuz", initrd: base + "-initramfs.zst", cmdline: strings.TrimSpace(string(cmdline))}
	for _, p := range []string{im.raw, im.kernel, im.initrd} {
		if _, err := os.Stat(p); err != nil {
			return image{}, fmt.Errorf("not an image built with --format raw,kernel: %w", err)
		}
	}
	return im, nil
}

// buildImages builds the node image, the floor image, which differs only in PID 1, and
// the reach image, which differs only in machined.
func buildImages(root, dir, inputsDir string, b boards.Board) error {
	ctx := context.Background()
	bin := func(name, pkg string) (string, error) {
		p := filepath.Join(dir, name)
		return p, build.GoBuild(ctx, root, pkg, b.Arch(), p)
	}
	initBin, err := bin("init", "./init")
	if err != nil {
		return err
	}
	machined, err := bin("machined", "./machined/cmd/machined")
	if err != nil {
		return err
	}
	testinit, err := bin("testinit", "./images/internal/testinit")
	if err != nil {
		return err
	}
	reach, err := bin("reach-machined", "./tools/bench/boot/internal/reach/cmd/reach")
	if err != nil {
		return err
	}
	for _, x := range []struct {
		init, machined string
		dst            *image
		name           string
	}{{initBin, machined, &env.kiln, "kiln"}, {testinit, machined, &env.floor, "floor"}, {initBin, reach, &env.reach, "reach"}} {
		out := filepath.Join(dir, x.name)
		if _, err := build.Build(ctx, build.Options{
			Board: b, Formats: []boards.Format{boards.FormatRaw, boards.FormatKernel}, OutputDir: out,
			InputsDir: inputsDir, Init: x.init, Machined: x.machined, Version: "bench",
		}); err != nil {
			return fmt.Errorf("build the %s image: %w", x.name, err)
		}
		im, err := builtImage(out, b)
		if err != nil {
			return err
		}
		*x.dst = im
	}
	return nil
}

func (im image) config(uefi bool) qemu.Config {
	c := qemu.Config{Arch: qemu.AMD64, Disk: im.raw, Timeout: 2 * wait}
	if uefi {
		c.UEFI = true
	} else {
		c.Kernel, c.Initrd, c.Append = im.kernel, im.initrd, im.cmdline
	}
	return c
}

// BenchmarkBoot boots the floor and the node alternately, so both see the same host
// load, and reports per boot: floor-ms (QEMU start → the trivial init's line), ready-ms
// (→ machined's readiness line), api-ms (→ first Version answered over the forwarded
// port) and the differences to the floor: the means, and the medians of each node
// boot's difference to the floor booted just before it (the host's load moves whole
// runs by ±0.3 s, and single boots more).
func BenchmarkBoot(b *testing.B) {
	for _, method := range []string{"direct", "uefi"} {
		b.Run(method, func(b *testing.B) {
			if env.skip != "" {
				b.Skip(env.skip)
			}
			uefi := method == "uefi"
			var floor, reach, ready, api, cpu, baseReady, baseAPI, baseCPU time.Duration
			// Per iteration: the node's extras over the floor and the reach image booted
			// just before it, and its readiness against the baseline's booted just after.
			var extraReady, extraAPI, extraReach, work, firstCall, vsBase, vsBaseAPI, baseFirstCall []time.Duration
			var guestReady, guestAPI, guestReach, guestWork, guestVsBase []time.Duration
			// From init's banner, in the same boot: no floor or baseline boot's noise.
			var bannerReady, bannerAPI, bannerVsBase, bannerAPIVsBase []time.Duration
			for b.Loop() {
				fb := bootFloor(b, uefi)
				f := fb.host
				floor += f
				rb := bootReach(b, uefi)
				rf := rb.host
				reach += rf
				nb, a, c := bootNode(b, env.kiln, uefi)
				r := nb.host
				ready += r
				api += a
				cpu += c
				extraReady = append(extraReady, r-f)
				extraAPI = append(extraAPI, a-f)
				extraReach = append(extraReach, rf-f)
				work = append(work, r-rf)
				firstCall = append(firstCall, a-r)
				guestReady = append(guestReady, nb.guest-fb.guest)
				// The first answer in the guest's clock: the readiness line's uptime
				// plus the host's time from that line to the answer.
				guestAPI = append(guestAPI, nb.guest+(a-r)-fb.guest)
				guestReach = append(guestReach, rb.guest-fb.guest)
				guestWork = append(guestWork, nb.guest-rb.guest)
				bannerReady = append(bannerReady, r-nb.banner)
				bannerAPI = append(bannerAPI, a-nb.banner)
				// Every boot's figures, for statistics beyond the medians (benchmarks
				// always print their logs).
				b.Logf("%s: floor %v (uptime %v), reach %v (%v), init's banner %v, ready %v (%v), first call %v, machined cpu %v",
					method, msr(f), fb.guest, msr(rf), rb.guest, msr(nb.banner), msr(r), nb.guest, msr(a), c)
				if env.baseline != nil {
					bb, ba, c := bootNode(b, *env.baseline, uefi)
					br := bb.host
					baseReady += br
					baseAPI += ba
					baseCPU += c
					vsBase = append(vsBase, r-br)
					vsBaseAPI = append(vsBaseAPI, a-ba)
					baseFirstCall = append(baseFirstCall, ba-br)
					bannerVsBase = append(bannerVsBase, (r-nb.banner)-(br-bb.banner))
					bannerAPIVsBase = append(bannerAPIVsBase, (a-nb.banner)-(ba-bb.banner))
					b.Logf("%s: baseline: init's banner %v, ready %v (%v), first call %v, machined cpu %v",
						method, msr(bb.banner), msr(br), bb.guest, msr(ba), c)
					if bb.guest > 0 {
						guestVsBase = append(guestVsBase, nb.guest-bb.guest)
					}
				}
			}
			med := func(ds []time.Duration) float64 { return float64(benchstat.Median(ds).Microseconds()) / 1000 }
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			b.ReportMetric(ms(floor), "floor-ms")
			b.ReportMetric(ms(ready), "ready-ms")
			b.ReportMetric(ms(api), "api-ms")
			b.ReportMetric(ms(ready-floor), "extra-ready-ms")
			b.ReportMetric(ms(api-floor), "extra-api-ms")
			b.ReportMetric(med(extraReady), "extra-ready-median-ms")
			b.ReportMetric(med(extraAPI), "extra-api-median-ms")
			b.ReportMetric(ms(reach), "reach-ms")
			b.ReportMetric(med(extraReach), "extra-reach-median-ms")
			b.ReportMetric(med(work), "machined-work-median-ms")
			b.ReportMetric(med(firstCall), "first-call-median-ms")
			b.ReportMetric(med(guestReady), "guest-extra-ready-median-ms")
			b.ReportMetric(med(guestAPI), "guest-extra-api-median-ms")
			b.ReportMetric(med(guestReach), "guest-extra-reach-median-ms")
			b.ReportMetric(med(guestWork), "guest-machined-work-median-ms")
			b.ReportMetric(med(bannerReady), "banner-to-ready-median-ms")
			b.ReportMetric(med(bannerAPI), "banner-to-api-median-ms")
			b.ReportMetric(ms(cpu), "machined-cpu-ms")
			if env.baseline != nil {
				b.ReportMetric(ms(baseReady), "baseline-ready-ms")
				b.ReportMetric(ms(baseAPI), "baseline-api-ms")
				b.ReportMetric(ms(ready-baseReady), "vs-baseline-ready-ms")
				b.ReportMetric(med(vsBase), "vs-baseline-ready-median-ms")
				b.ReportMetric(med(bannerVsBase), "vs-baseline-banner-to-ready-median-ms")
				b.ReportMetric(med(vsBaseAPI), "vs-baseline-api-median-ms")
				b.ReportMetric(med(bannerAPIVsBase), "vs-baseline-banner-to-api-median-ms")
				b.ReportMetric(med(baseFirstCall), "baseline-first-call-median-ms")
				if len(guestVsBase) > 0 { // none: the baseline's readiness line has no uptime key
					b.ReportMetric(med(guestVsBase), "guest-vs-baseline-ready-median-ms")
				}
				if baseCPU > 0 { // zero: the baseline's readiness line has no cpu key
					b.ReportMetric(ms(baseCPU), "baseline-machined-cpu-ms")
				}
			}
		})
	}
}

// msr rounds a duration to the millisecond, for the logs.
func msr(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// boot is one boot's time to its line: from QEMU's start, and in the guest's clock
// (the line's uptime=, the time since the kernel started); for a node, also the time
// from QEMU's start to init's banner.
type boot struct{ host, guest, banner time.Duration }

// lineUptime is the uptime= of a console line; a line without one fails the benchmark.
func lineUptime(b *testing.B, line string) time.Duration {
	b.Helper()
	m := uptimeKey.FindStringSubmatch(line)
	if m == nil {
		b.Fatalf("no uptime= in %q", line)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		b.Fatalf("uptime= in %q: %v", line, err)
	}
	return d
}

// bootUntil boots im and waits for re on its console. It returns the VM, which the
// caller closes, the match, and the time from QEMU's start to it. With banner set it
// first waits for init's banner and returns the time to it too (zero otherwise).
func bootUntil(b *testing.B, im image, uefi bool, re *regexp.Regexp, banner bool) (vm *qemu.VM, m []string, d, toBanner time.Duration) {
	b.Helper()
	vm, err := qemu.Start(context.Background(), im.config(uefi))
	if err != nil {
		b.Fatal(err)
	}
	if banner {
		if _, err := vm.Expect(initBanner, wait); err != nil {
			vm.Close()
			b.Fatal(err)
		}
		toBanner = time.Since(vm.Started())
	}
	if m, err = vm.Expect(re, wait); err != nil {
		vm.Close()
		b.Fatal(err)
	}
	return vm, m, time.Since(vm.Started()), toBanner
}

func bootFloor(b *testing.B, uefi bool) boot {
	b.Helper()
	vm, m, d, _ := bootUntil(b, env.floor, uefi, floorMarker, false)
	defer vm.Close()
	return boot{host: d, guest: lineUptime(b, m[0])}
}

// bootReach boots the reach image and returns the time to the stand-in's line.
func bootReach(b *testing.B, uefi bool) boot {
	b.Helper()
	vm, m, d, _ := bootUntil(b, env.reach, uefi, reachMarker, false)
	defer vm.Close()
	if m[1] != "OK" {
		b.Fatalf("reach image: %s", m[0])
	}
	return boot{host: d, guest: lineUptime(b, m[0])}
}

// bootNode boots a node image and returns the times to its readiness line (guest zero
// when the line has no uptime key: a baseline's machined may be older) and to its
// first answered Version call, and the CPU time machined had used at the readiness line
// (its cpu key; zero from a machined older than the key): the work machined does to
// start, a figure the host's load moves less than the times. The calls start at
// the readiness line, which machined prints once it listens and has its address, so no
// answer can come earlier; calls from QEMU's start (each a connection QEMU's user
// network tries to forward to a guest without an address yet) slowed the guest's boot
// by about half a second.
func bootNode(b *testing.B, im image, uefi bool) (ready boot, api, cpu time.Duration) {
	b.Helper()
	vm, m, d, banner := bootUntil(b, im, uefi, provision.ReadyPattern, true)
	defer vm.Close()
	ready.host, ready.banner = d, banner
	key := func(name string) time.Duration {
		v := m[provision.ReadyPattern.SubexpIndex(name)]
		if v == "" {
			return 0
		}
		t, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("readiness line: %s=%q: %v", name, v, err)
		}
		return t
	}
	ready.guest, cpu = key("uptime"), key("cpu")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := callVersion(cctx, vm.Addr())
		ccancel()
		if err == nil {
			return ready, time.Since(vm.Started()), cpu
		}
		if ctx.Err() != nil {
			b.Fatalf("no Version answer from %s: %v", vm.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func callVersion(ctx context.Context, addr string) error {
	c, err := client.New(ctx, addr, client.WithInsecure(""))
	if err != nil {
		return err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = c.Version(cctx, &machine.VersionRequest{})
	return err
}
