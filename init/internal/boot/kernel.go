package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sysctl is one /proc/sys setting.
type Sysctl struct{ Key, Value string }

// KernelSettings are init's settings before anything else runs. A wedged node reboots:
// 10 s after a panic, and an oops or a hung task becomes a panic. printk_devkmsg=on lets
// init and machined log through /dev/kmsg without the default rate limit. An empty
// kernel.modprobe: a node has no modprobe (init loads modules from its manifest), so
// the kernel's own requests for a module (fs-*, net-pf-*, crypto-*) fail at once
// instead of each starting a usermode helper that can only fail.
func KernelSettings() []Sysctl {
	return []Sysctl{
		{"kernel.panic", "10"},
		{"kernel.panic_on_oops", "1"},
		{"kernel.hung_task_panic", "1"},
		{"kernel.hung_task_timeout_secs", "300"},
		{"kernel.printk_devkmsg", "on"},
		{"kernel.modprobe", ""},
	}
}

// SysctlPath maps a dotted key below procSys (normally /proc/sys).
func SysctlPath(procSys, key string) string {
	return filepath.Join(procSys, strings.ReplaceAll(key, ".", "/"))
}

// ApplySysctls writes the settings; a key the kernel lacks is reported, the rest are
// still written. Each value ends with a newline, as sysctl(8) and `echo` write them:
// kernel.printk_devkmsg refuses a value without one ("on" is EINVAL, "on\n" works; the
// kernel checks that exactly one byte follows the keyword), the numeric keys accept both.
func ApplySysctls(procSys string, s []Sysctl) error {
	var errs []string
	for _, kv := range s {
		if err := os.WriteFile(SysctlPath(procSys, kv.Key), []byte(kv.Value+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%s: %v", kv.Key, kv.Value, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("sysctl: %s", strings.Join(errs, "; "))
	}
	return nil
}
