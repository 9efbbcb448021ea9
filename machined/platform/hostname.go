package platform

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// ValidHostname checks a hostname as the kernel and DNS take it: 1–64 bytes of
// letters, digits, '-' and '.', labels not starting or ending with '-'.
func ValidHostname(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("hostname %q: want 1 to 64 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("hostname %q: empty label or label starting/ending with '-'", name)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("hostname %q: %q is not allowed", name, r)
			}
		}
	}
	return nil
}

// SetHostname sets the kernel's hostname (the UTS namespace of the caller).
func SetHostname(name string) error {
	if err := ValidHostname(name); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	return nil
}
