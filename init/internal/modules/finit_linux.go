package modules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Finit loads modules with finit_module(2). A compressed file (xz, zstd or gzip, told
// by its first bytes, whatever its name) is passed with MODULE_INIT_COMPRESSED_FILE so
// the kernel decompresses it (no decompressor in init); an uncompressed .ko is loaded
// as it is, which saves the kernel's decompression.
type Finit struct {
	// Params are module parameters by module name (the kernel command line's, see
	// cmdline.Params.ModuleParams): a module gets its own, as modprobe gives them.
	Params map[string][]string
}

// Load implements Loader. EEXIST (already loaded) is success.
func (l Finit) Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var head [6]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	flags := 0
	if Compressed(head[:n]) {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), ParamString(l.Params, path), flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

// ParamString is the parameter string finit_module(2) gets for the module file at
// path: its entries in params, by the module's name (the file's, without .ko and a
// compression suffix, dashes as underscores), separated by spaces.
func ParamString(params map[string][]string, path string) string {
	name := filepath.Base(path)
	for _, suf := range []string{".xz", ".zst", ".gz"} {
		name = strings.TrimSuffix(name, suf)
	}
	name = strings.ReplaceAll(strings.TrimSuffix(name, ".ko"), "-", "_")
	return strings.Join(params[name], " ")
}

// Compressed reports whether a module file starting with head is compressed in a
// format the kernel's module decompressor knows (xz, zstd, gzip).
func Compressed(head []byte) bool {
	for _, magic := range [][]byte{
		{0xfd, '7', 'z', 'X', 'Z', 0x00}, // xz
		{0x28, 0xb5, 0x2f, 0xfd},         // zstd
		{0x1f, 0x8b},                     // gzip
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return false
}
