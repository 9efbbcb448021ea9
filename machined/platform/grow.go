package platform

import (
	"fmt"
	"log/slog"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// GrowResult says what GrowEphemeral did.
type GrowResult struct {
	PartitionGrown bool
	OldBytes       int64 // EPHEMERAL partition size before
	NewBytes       int64 // and after
	FSBlocks       uint64
}

// GrowEphemeral fits the GPT of disk to the device's size, extends EPHEMERAL (the last
// partition) to the end, tells the kernel with BLKPG, and grows the ext4 filesystem
// mounted at mountpoint online with EXT4_IOC_RESIZE_FS. Safe to call on every boot:
// with nothing to grow it changes nothing.
func GrowEphemeral(d *Disk, mountpoint string, log *slog.Logger) (GrowResult, error) {
	var res GrowResult
	f, err := os.OpenFile(d.Dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return res, fmt.Errorf("grow EPHEMERAL: %w", err)
	}
	defer f.Close()
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return res, fmt.Errorf("grow EPHEMERAL: size of %s: %w", d.Dev, err)
	}
	ss := d.SectorSize
	if ss == 0 {
		ss = 512
	}
	g, err := ReadGPT(f, ss)
	if err != nil {
		return res, fmt.Errorf("grow EPHEMERAL: %s: %w", d.Dev, err)
	}
	p, ok := g.ByName(LabelEphemeral)
	if !ok {
		return res, fmt.Errorf("grow EPHEMERAL: %s has no EPHEMERAL partition", d.Dev)
	}
	res.OldBytes = int64(p.LastLBA-p.FirstLBA+1) * ss
	changed, err := g.Resize(size/uint64(ss), LabelEphemeral)
	if err != nil {
		return res, fmt.Errorf("grow EPHEMERAL: %w", err)
	}
	p, _ = g.ByName(LabelEphemeral)
	res.NewBytes = int64(p.LastLBA-p.FirstLBA+1) * ss
	if changed {
		if err := g.Write(f); err != nil {
			return res, fmt.Errorf("grow EPHEMERAL: %w", err)
		}
		if err := f.Sync(); err != nil {
			return res, fmt.Errorf("grow EPHEMERAL: sync %s: %w", d.Dev, err)
		}
		if res.NewBytes != res.OldBytes {
			if err := blkpgResize(f, p.Number, int64(p.FirstLBA)*ss, res.NewBytes); err != nil {
				return res, fmt.Errorf("grow EPHEMERAL: %w", err)
			}
			res.PartitionGrown = true
		}
	}
	blocks, err := ResizeExt4(mountpoint, res.NewBytes)
	if err != nil {
		return res, fmt.Errorf("grow EPHEMERAL: %w", err)
	}
	res.FSBlocks = blocks
	if log != nil {
		log.Info("EPHEMERAL sized", "disk", d.Dev, "old_bytes", res.OldBytes, "new_bytes", res.NewBytes, "fs_blocks", blocks)
	}
	return res, nil
}

// blkpgResize tells the kernel a partition's new size without re-reading the whole
// table (which fails while partitions are mounted).
func blkpgResize(disk *os.File, number int, start, length int64) error {
	part := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(number)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(part)), Data: (*byte)(unsafe.Pointer(&part))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return fmt.Errorf("BLKPG resize partition %d of %s to %d bytes: %w", number, disk.Name(), length, e)
	}
	return nil
}

// ResizeExt4 grows the ext4 filesystem mounted at mountpoint to fill bytes (its
// device's size), online. It returns the new block count; a filesystem already that
// large is left alone.
func ResizeExt4(mountpoint string, bytes int64) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", mountpoint, err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not ext4 (magic %#x)", mountpoint, st.Type)
	}
	bs := uint64(st.Bsize)
	want := uint64(bytes) / bs
	if want <= st.Blocks {
		return st.Blocks, nil
	}
	f, err := os.Open(mountpoint)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&want))); e != 0 {
		return 0, fmt.Errorf("EXT4_IOC_RESIZE_FS %s to %d blocks: %w", mountpoint, want, e)
	}
	return want, nil
}
