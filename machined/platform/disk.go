package platform

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Partition labels of the system disk (DESIGN.md, disk layout).
const (
	LabelEFI       = "EFI"
	LabelMeta      = "META"
	LabelState     = "STATE"
	LabelEphemeral = "EPHEMERAL"
)

// SystemLabels must all be present on the system disk.
var SystemLabels = []string{LabelEFI, LabelMeta, LabelState, LabelEphemeral}

// Disk is a whole block device and its labelled partitions.
type Disk struct {
	Name       string // e.g. vda
	Dev        string // e.g. /dev/vda
	SectorSize int64
	Partitions map[string]BlockPartition // by GPT label
}

// BlockPartition is a partition as the kernel shows it.
type BlockPartition struct {
	Dev    string // e.g. /dev/vda4
	Number int
}

// FindSystemDisk looks at every whole disk in sysClassBlock (normally /sys/class/block)
// and returns the one whose GPT carries all of SystemLabels. Labels come from the
// partition table itself (read through the device nodes in devDir, normally /dev): the
// kernel's PARTNAME is missing for partitions added with BLKPG. Partition device names
// come from sysfs (PARTN of each child).
func FindSystemDisk(sysClassBlock, devDir string) (*Disk, error) {
	ents, err := os.ReadDir(sysClassBlock)
	if err != nil {
		return nil, fmt.Errorf("find system disk: %w", err)
	}
	// children[disk][number] = partition device name
	children := map[string]map[int]string{}
	var wholes []string
	for _, e := range ents {
		dir := filepath.Join(sysClassBlock, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "partition")); err != nil {
			if readInt(filepath.Join(dir, "size"), 0) > 0 {
				wholes = append(wholes, e.Name())
			}
			continue
		}
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			continue
		}
		parent := filepath.Base(filepath.Dir(real))
		n, err := strconv.Atoi(readUevent(filepath.Join(dir, "uevent"))["PARTN"])
		if err != nil {
			continue
		}
		if children[parent] == nil {
			children[parent] = map[int]string{}
		}
		children[parent][n] = e.Name()
	}
	sort.Strings(wholes)
	var found []*Disk
	for _, name := range wholes {
		d := &Disk{Name: name, Dev: filepath.Join(devDir, name), Partitions: map[string]BlockPartition{},
			SectorSize: readInt(filepath.Join(sysClassBlock, name, "queue", "logical_block_size"), 512)}
		g, err := readDiskGPT(d.Dev, d.SectorSize)
		if err != nil {
			continue
		}
		for _, p := range g.Partitions() {
			if child, ok := children[name][p.Number]; ok {
				d.Partitions[p.Name] = BlockPartition{Dev: filepath.Join(devDir, child), Number: p.Number}
			}
		}
		if hasAll(d, SystemLabels) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("find system disk: no disk has partitions labelled %s", strings.Join(SystemLabels, ", "))
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("find system disk: %d disks carry the system labels (%s, %s, …); remove the extra disk", len(found), found[0].Name, found[1].Name)
}

func readDiskGPT(dev string, sectorSize int64) (*GPT, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadGPT(f, sectorSize)
}

func hasAll(d *Disk, labels []string) bool {
	for _, l := range labels {
		if _, ok := d.Partitions[l]; !ok {
			return false
		}
	}
	return true
}

func readUevent(p string) map[string]string {
	b, _ := os.ReadFile(p)
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func readInt(p string, def int64) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return def
	}
	return n
}
