// Package boardtest is the conformance suite every board passes: Run(t, b) checks that a
// Board's definition is complete and self-consistent.
package boardtest

import (
	"slices"
	"strings"
	"testing"

	"github.com/kiln-os/kiln/boards"
)

// Run checks board b against the rules every board keeps.
func Run(t *testing.T, b boards.Board) {
	t.Helper()
	t.Run("identity", func(t *testing.T) { identity(t, b) })
	t.Run("kernel", func(t *testing.T) { kernel(t, b) })
	t.Run("modules", func(t *testing.T) { modules(t, b) })
	t.Run("console", func(t *testing.T) { console(t, b) })
	t.Run("boot", func(t *testing.T) { boot(t, b) })
	t.Run("layout", func(t *testing.T) { layout(t, b) })
	t.Run("outputs", func(t *testing.T) { outputs(t, b) })
}

func identity(t *testing.T, b boards.Board) {
	if b.Name() == "" || strings.ContainsAny(b.Name(), " /\t") {
		t.Errorf("Name() = %q, want a non-empty name without spaces or slashes", b.Name())
	}
	switch b.Arch() {
	case boards.AMD64, boards.ARM64:
	default:
		t.Errorf("Arch() = %q, want amd64 or arm64", b.Arch())
	}
	if got, err := boards.Lookup(b.Name()); err != nil || got.Name() != b.Name() {
		t.Errorf("Lookup(%q) = %v, %v; want the board: every board is in boards.All", b.Name(), got, err)
	}
}

func kernel(t *testing.T, b boards.Board) {
	k := b.Kernel()
	if k.Release == "" {
		t.Fatalf("Kernel().Release is empty")
	}
	if k.Build != nil {
		kernelBuild(t, b)
	} else if k.Package.Name == "" || k.Package.Arch != string(b.Arch()) {
		t.Errorf("Kernel().Package = %v, want a package for arch %s", k.Package, b.Arch())
	}
	if !strings.HasSuffix(k.Release, string(b.Arch())) {
		t.Errorf("Kernel().Release = %q, want a release built for %s", k.Release, b.Arch())
	}
}

func kernelBuild(t *testing.T, b boards.Board) {
	k := b.Kernel()
	if k.Package.Name != "" {
		t.Errorf("Kernel() has both Package %v and Build: want one source", k.Package)
	}
	kb := k.Build
	if kb.Source.Name == "" || kb.Source.Arch != "all" {
		t.Errorf("Kernel().Build.Source = %v, want Debian's linux-source package (arch all)", kb.Source)
	}
	if kb.Config.Name == "" || kb.Config.Arch != string(b.Arch()) {
		t.Errorf("Kernel().Build.Config = %v, want Debian's linux-config package for %s", kb.Config, b.Arch())
	}
	if kb.ConfigName == "" || strings.Contains(kb.ConfigName, "/") {
		t.Errorf("Kernel().Build.ConfigName = %q, want a file name", kb.ConfigName)
	}
	lines := strings.Split(kb.Fragment, "\n")
	if !slices.Contains(lines, "# CONFIG_MODULES is not set") {
		t.Errorf("Kernel().Build.Fragment does not turn modules off; a built kernel has none")
	}
	for i, l := range lines {
		if l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "CONFIG_") {
			t.Errorf("Kernel().Build.Fragment line %d: %q is neither a CONFIG_ line nor a comment", i+1, l)
		}
	}
}

func modules(t *testing.T, b boards.Board) {
	m := b.Modules()
	if b.Kernel().Build != nil {
		if len(m.Initramfs)+len(m.Early)+len(m.Late) != 0 {
			t.Errorf("Modules() = %+v; a kernel Kiln builds has no modules (its fragment builds them in)", m)
		}
		return
	}
	if len(m.Early) == 0 {
		t.Errorf("Modules().Early is empty; init needs at least squashfs")
	}
	seen := map[string]string{}
	for set, list := range map[string][]string{"early": m.Early, "late": m.Late} {
		for _, name := range list {
			n := strings.ReplaceAll(name, "-", "_")
			if n == "" || strings.ContainsAny(n, "/. ") {
				t.Errorf("%s module %q is not a module name", set, name)
			}
			if prev, ok := seen[n]; ok {
				t.Errorf("module %q listed twice (%s and %s)", name, prev, set)
			}
			seen[n] = set
		}
	}
	for _, name := range m.Initramfs {
		if _, ok := seen[strings.ReplaceAll(name, "-", "_")]; !ok {
			t.Errorf("initramfs module %q is in neither Early nor Late: the manifest would lack it", name)
		}
	}
	if _, ok := seen["squashfs"]; !ok {
		t.Errorf("Modules() lacks squashfs: init cannot mount the root")
	}
}

func console(t *testing.T, b boards.Board) {
	if b.Console() == "" || strings.HasPrefix(b.Console(), "console=") {
		t.Errorf("Console() = %q, want a device such as ttyS0,115200", b.Console())
	}
	for _, a := range b.KernelArgs() {
		if strings.HasPrefix(a, "console=") || strings.ContainsAny(a, " \t\n") || a == "" {
			t.Errorf("KernelArgs() has %q: want single words, console= comes from Console()", a)
		}
	}
}

func boot(t *testing.T, b boards.Board) {
	bt := b.Boot()
	switch bt.Method {
	case boards.BootUEFI:
		if b.Layout().Table != boards.GPT {
			t.Errorf("UEFI board has a %s table, want gpt", b.Layout().Table)
		}
		if bt.Bootloader == nil || bt.Stub == nil {
			t.Fatalf("UEFI board needs Bootloader and Stub")
		}
		want := "EFI/BOOT/BOOT" + b.Arch().EFISuffix() + ".EFI"
		if bt.Bootloader.Dst != want {
			t.Errorf("Bootloader.Dst = %q, want %q", bt.Bootloader.Dst, want)
		}
		for _, f := range []*boards.FileFromPackage{bt.Bootloader, bt.Stub} {
			if f.Src == "" || strings.HasPrefix(f.Src, "/") || f.Package.Name == "" {
				t.Errorf("file %+v: want a package and a relative source path", *f)
			}
		}
	case boards.BootRPiFirmware:
		if bt.ConfigTxt == "" {
			t.Errorf("Raspberry Pi board has no config.txt")
		}
		if len(bt.Firmware) == 0 {
			t.Errorf("Raspberry Pi board has no firmware files")
		}
		if b.Layout().Table != boards.MBR {
			t.Errorf("Raspberry Pi board has a %s table, want mbr (tryboot numbers MBR partitions)", b.Layout().Table)
		}
	default:
		t.Errorf("Boot().Method = %q, want uefi or rpi-firmware", bt.Method)
	}
	for _, f := range bt.Firmware {
		if f.Src == "" || f.Dst == "" || strings.HasPrefix(f.Dst, "/") {
			t.Errorf("firmware file %+v: want source and relative destination", f)
		}
	}
	pk := boards.Packages(b)
	first := b.Kernel().Package
	if kb := b.Kernel().Build; kb != nil {
		first = kb.Source
	}
	if len(pk) == 0 || pk[0] != first {
		t.Errorf("Packages() = %v, want the kernel's package (%v) first", pk, first)
	}
}

func layout(t *testing.T, b boards.Board) {
	l := b.Layout()
	if len(l.Partitions) == 0 {
		t.Fatalf("Layout() has no partitions")
	}
	labels := map[string]bool{}
	numbers := map[int]bool{}
	for i, p := range l.Partitions {
		if p.Label == "" || labels[p.Label] {
			t.Errorf("partition %d label %q: want unique non-empty labels", i, p.Label)
		}
		labels[p.Label] = true
		if p.Size <= 0 || p.Size%boards.MiB != 0 {
			t.Errorf("partition %s size %d: want a positive multiple of 1 MiB", p.Label, p.Size)
		}
		if p.Filesystem == boards.FAT32 && p.Size < 33*boards.MiB {
			t.Errorf("partition %s: FAT32 needs at least 33 MiB, has %d", p.Label, p.Size)
		}
		switch l.Table {
		case boards.GPT:
			if p.MBRNumber != 0 {
				t.Errorf("partition %s: MBRNumber %d on a GPT board", p.Label, p.MBRNumber)
			}
		case boards.MBR:
			if p.MBRNumber < 1 || p.MBRNumber > 4 || numbers[p.MBRNumber] {
				t.Errorf("partition %s: MBRNumber %d, want unique 1..4", p.Label, p.MBRNumber)
			}
			numbers[p.MBRNumber] = true
		default:
			t.Errorf("Layout().Table = %q, want gpt or mbr", l.Table)
		}
	}
	for _, want := range []string{boards.LabelState, boards.LabelEphemeral} {
		if !labels[want] {
			t.Errorf("Layout() lacks partition %s", want)
		}
	}
	if b.Boot().Method == boards.BootUEFI {
		p := l.Partitions[0]
		if p.Label != boards.LabelEFI || p.Filesystem != boards.FAT32 {
			t.Errorf("first partition = %s/%s, want EFI/vfat", p.Label, p.Filesystem)
		}
		if p.Size < 128*boards.MiB {
			t.Errorf("EFI partition %d bytes: want room for two UKIs (>= 128 MiB)", p.Size)
		}
	}
}

func outputs(t *testing.T, b boards.Board) {
	if len(b.Outputs()) == 0 {
		t.Fatalf("Outputs() is empty")
	}
	for _, f := range b.Outputs() {
		if _, err := boards.ParseFormat(string(f)); err != nil {
			t.Errorf("Outputs(): %v", err)
		}
		if b.Boot().Method != boards.BootUEFI && (f == boards.FormatUKI || f == boards.FormatISO) {
			t.Errorf("Outputs() has %s, which needs UEFI", f)
		}
	}
}
