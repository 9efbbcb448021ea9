package modules

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Finit loads modules with finit_module(2); for .ko.xz/.ko.zst/.ko.gz it passes
// MODULE_INIT_COMPRESSED_FILE so the kernel decompresses (no decompressor in init).
type Finit struct{}

// Load implements Loader. EEXIST (already loaded) is success.
func (Finit) Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}
