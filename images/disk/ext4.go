package disk

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// writeExt4 makes an empty ext4 filesystem with label inside the image at
// path, at byte offset off and size bytes long, with mke2fs from e2fsprogs
// (Go has no ext4 writer that can be made reproducible). Reproducible: the
// UUID and directory hash seed derive from seed, and E2FSPROGS_FAKE_TIME
// pins every timestamp to epoch.
func writeExt4(path string, off, size int64, label, seed string, epoch int64) error {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("ext4 partition %s: mkfs.ext4 not found (install e2fsprogs): %w", label, err)
	}
	uuid := strings.ToLower(GUID(seed, "ext4/"+label))
	hashSeed := strings.ToLower(GUID(seed, "ext4-hash/"+label))
	cmd := exec.Command(mkfs, "-q", "-F",
		"-L", label,
		"-U", uuid,
		"-b", "4096",
		"-m", "0",
		"-E", "offset="+strconv.FormatInt(off, 10)+",hash_seed="+hashSeed+",nodiscard,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
		path, strconv.FormatInt(size/1024, 10)+"k")
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(epoch, 10), "MKE2FS_CONFIG=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ext4 partition %s: mkfs.ext4: %w\n%s", label, err, out)
	}
	return nil
}
