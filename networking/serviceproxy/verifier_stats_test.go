//go:build linux

package serviceproxy

import (
	"regexp"
	"testing"

	"github.com/cilium/ebpf"
)

// TestTCVerifierStats loads the TC programs with the verifier's statistics and
// logs how many instructions it processed for each: the figure the verifier's
// one-million limit applies to.
func TestTCVerifierStats(t *testing.T) {
	newSandbox(t)
	spec, err := loadTc()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	re := regexp.MustCompile(`processed (\d+) insns`)
	for name, p := range coll.Programs {
		m := re.FindStringSubmatch(p.VerifierLog)
		if m == nil {
			t.Errorf("%s: no statistics in the verifier log %q", name, p.VerifierLog)
			continue
		}
		t.Logf("%s: verifier processed %s instructions", name, m[1])
	}
}
