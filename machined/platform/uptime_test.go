package platform

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestUptimeIsTheKernelsBootClock(t *testing.T) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Skipf("needs /proc/uptime: %v", err)
	}
	f := strings.Fields(string(b))
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("/proc/uptime %q: %v", b, err)
	}
	proc := time.Duration(secs * float64(time.Second))
	up := Uptime()
	// /proc/uptime counts the same clock in hundredths and was read first; the bound
	// above only tells a boot clock from some other clock (the epoch, a process's).
	if up < proc || up > proc+time.Hour {
		t.Errorf("Uptime() = %v, /proc/uptime said %v just before", up, proc)
	}
}
