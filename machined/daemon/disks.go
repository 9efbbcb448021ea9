package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-os/kiln/machined/server"
)

// sectorSize is the unit of /sys/block/*/size, whatever the device's.
const sectorSize = 512

// virtualDisks are block devices that are never install targets.
var virtualDisks = []string{"loop", "ram", "zram"}

// readDisks lists the block devices under sysBlock (/sys/block).
func readDisks(sysBlock string) ([]server.Disk, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var disks []server.Disk
	for _, e := range entries {
		name := e.Name()
		if slices.ContainsFunc(virtualDisks, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		dir := filepath.Join(sysBlock, name)
		sectors, _ := strconv.ParseUint(readAttr(dir, "size"), 10, 64)
		disks = append(disks, server.Disk{
			Name:       name,
			SizeBytes:  sectors * sectorSize,
			Model:      readAttr(dir, "device/model"),
			Serial:     firstAttr(dir, "device/serial", "serial", "device/wwid"),
			Rotational: readAttr(dir, "queue/rotational") == "1",
			ReadOnly:   readAttr(dir, "ro") == "1",
		})
	}
	return disks, nil
}

// readAttr returns a sysfs attribute, trimmed; "" when it is missing.
func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func firstAttr(dir string, names ...string) string {
	for _, n := range names {
		if v := readAttr(dir, n); v != "" {
			return v
		}
	}
	return ""
}
