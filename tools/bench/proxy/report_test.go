//go:build linux

package proxy

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// report logs the figures as Markdown tables, appends them to
// $KILN_BENCH_PROXY_OUT when set, and reports the eBPF figures and ratios as
// benchmark metrics.
func report(b *testing.B, n, conns int, created time.Duration, results []*result) {
	var w strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&w, "\n### %d Services × 2 endpoints — %s, %s/%s, %d CPUs, host %s, kernel %s\n\n",
		n, time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), host, kernel())
	fmt.Fprintf(&w, "Objects created through the API in %.1f s. Load average at the end: %s.\n\n", created.Seconds(), loadavg())

	w.WriteString("| mode | (a) start → probe OK | (a) programming, own figure | (b) change → probe OK | (b) programming, own figure | (b) kube-proxy network programming latency |\n")
	w.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		if r.mode == modeDirect || r.mode == modeDirectEnd {
			continue
		}
		own := dur(r.firstSync)
		if r.syncs > 1 {
			own += fmt.Sprintf(" (mean of %d syncs)", r.syncs)
		}
		prog := dur(r.changeProg)
		if r.changeProgCPU > 0 {
			prog += fmt.Sprintf(" (CPU %s)", dur(r.changeProgCPU))
		}
		fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s |\n", r.mode, dur(r.startToProbe), own, dur(r.changeE2E), prog, dur(r.changeNPL))
	}

	// The direct baseline is the mean of the direct runs at the start and at
	// the end.
	var direct *result
	if d := find(results, modeDirect); d != nil {
		direct = &result{load: map[int]loadResult{}}
		for c, l := range d.load {
			if e := find(results, modeDirectEnd); e != nil {
				l.CPUPerConn = (l.CPUPerConn + e.load[c].CPUPerConn) / 2
			}
			direct.load[c] = l
		}
	}
	fmt.Fprintf(&w, "\n%d new TCP connections (connect, 1-byte echo, close), in turn to the ClusterIPs of %d Services picked at random, the same in every mode (direct: to a backend address of each, no proxy). CPU × direct: against the mean of the two direct runs.\n\n", conns, min(spreadServices, n))
	w.WriteString("| mode | conc. | conn/s | p50 | p99 | client CPU/conn | CPU × direct | conn/s × kube-proxy iptables (legacy / nft) |\n")
	w.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range []int{1, 8} {
		for _, r := range results {
			l, ok := r.load[c]
			if !ok {
				continue
			}
			cpuX := "–"
			if direct != nil && direct.load[c].CPUPerConn > 0 {
				cpuX = fmt.Sprintf("%.2f", float64(l.CPUPerConn)/float64(direct.load[c].CPUPerConn))
			}
			fmt.Fprintf(&w, "| %s | %d | %.0f | %s | %s | %s | %s | %s |\n", r.mode, c, l.ConnPerSec(), dur(l.P50), dur(l.P99), dur(l.CPUPerConn), cpuX,
				ratio(l, find(results, modeLegacy), c)+" / "+ratio(l, find(results, modeIPTNFT), c))
		}
	}
	out := w.String()
	b.Log(out)
	if path := os.Getenv("KILN_BENCH_PROXY_OUT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.WriteString(out)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			b.Errorf("write %s: %v", path, err)
		}
	}

	if e := find(results, modeEBPF); e != nil {
		b.ReportMetric(float64(e.firstSync)/1e6, "ebpf-program-ms")
		b.ReportMetric(float64(e.changeProg)/1e3, "ebpf-change-µs")
		b.ReportMetric(float64(e.changeProgCPU)/1e3, "ebpf-change-cpu-µs")
		if direct != nil && direct.load[1].CPUPerConn > 0 {
			b.ReportMetric(float64(e.load[1].CPUPerConn)/float64(direct.load[1].CPUPerConn), "ebpf-cpu×direct")
		}
		if l := find(results, modeLegacy); l != nil {
			b.ReportMetric(e.load[1].ConnPerSec()/l.load[1].ConnPerSec(), "ebpf-conn/s×iptables-legacy")
		}
		if l := find(results, modeIPTNFT); l != nil {
			b.ReportMetric(e.load[1].ConnPerSec()/l.load[1].ConnPerSec(), "ebpf-conn/s×iptables-nft")
		}
	}
}

func find(results []*result, mode string) *result {
	for _, r := range results {
		if r.mode == mode {
			return r
		}
	}
	return nil
}

func ratio(l loadResult, anchor *result, c int) string {
	if anchor == nil {
		return "–"
	}
	a, ok := anchor.load[c]
	if !ok || a.ConnPerSec() == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", l.ConnPerSec()/a.ConnPerSec())
}

// dur prints a duration with three significant digits; zero is "–".
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
