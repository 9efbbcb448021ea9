//go:build linux

package proxy

import (
	"testing"

	"github.com/kiln-os/kiln/networking/bpfsandbox"
)

// The benchmark and the acceptance test run in a private network and mount
// namespace (bpfsandbox.Main): the control plane's loopback, every namespace
// made below and every bpffs and cgroup2 mount end with the process.
func TestMain(m *testing.M) { bpfsandbox.Main(m) }
