package build

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/boards"
)

// marker is the line images/internal/testinit prints once it runs as PID 1.
const marker = "KILN-IMAGE-BOOT-OK"

type firmware struct{ code, vars string }

var firmwares = map[boards.Arch]firmware{
	boards.AMD64: {"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	boards.ARM64: {"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"},
}

// qemuArgs returns the QEMU binary and arguments for a UEFI boot of drive on arch.
func qemuArgs(t *testing.T, arch boards.Arch, vars string, drive []string) (string, []string) {
	fw := firmwares[arch]
	common := []string{"-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + fw.code,
		"-drive", "if=pflash,format=raw,file=" + vars}
	switch arch {
	case boards.AMD64:
		return "qemu-system-x86_64", append(append([]string{"-M", "q35"}, common...), drive...)
	case boards.ARM64:
		return "qemu-system-aarch64", append(append([]string{"-M", "virt", "-cpu", "cortex-a72"}, common...), drive...)
	}
	t.Fatalf("no QEMU for %s", arch)
	return "", nil
}

func needQEMU(t *testing.T, arch boards.Arch) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot test skipped in -short mode")
	}
	bin := map[boards.Arch]string{boards.AMD64: "qemu-system-x86_64", boards.ARM64: "qemu-system-aarch64"}[arch]
	if _, err := exec.LookPath(bin); err != nil {
		t.Skipf("needs %s: apt-get install -t bookworm-backports qemu-system-x86 qemu-system-arm", bin)
	}
	fw := firmwares[arch]
	for _, p := range []string{fw.code, fw.vars} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs UEFI firmware %s: apt-get install ovmf qemu-efi-aarch64", p)
		}
	}
}

// bootUntilMarker boots the image and waits for the marker line on the serial console.
// QEMU is killed on a kernel panic or after the deadline (hang protection, not a timing
// assertion); the serial log is kept as a test artifact.
func bootUntilMarker(t *testing.T, arch boards.Arch, image string, cdrom bool) string {
	t.Helper()
	dir := t.TempDir()
	vars := filepath.Join(dir, "vars.fd")
	if err := copyFile(firmwares[arch].vars, vars); err != nil {
		t.Fatal(err)
	}
	// Boot a copy: systemd-boot renames the UKI as it counts boots.
	disk := filepath.Join(dir, filepath.Base(image))
	if err := copyFile(image, disk); err != nil {
		t.Fatal(err)
	}
	drive := []string{"-drive", "file=" + disk + ",format=raw,if=virtio"}
	if cdrom {
		drive = []string{"-drive", "file=" + disk + ",format=raw,media=cdrom,if=none,id=cd", "-device", "ide-cd,drive=cd"}
	}
	bin, args := qemuArgs(t, arch, vars, drive)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = nil
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()

	logPath := filepath.Join(t.ArtifactDir(), "serial-"+string(arch)+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	found := ""
	// The last lines, for the failure message: the artifact directory is removed after
	// the test unless go test runs with -artifacts.
	var tail []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		logf.WriteString(line + "\n")
		if tail = append(tail, line); len(tail) > 40 {
			tail = tail[1:]
		}
		if i := strings.Index(line, marker); i >= 0 && found == "" {
			found = line[i:]
		}
		if strings.Contains(line, "Kernel panic") {
			cmd.Process.Kill()
		}
	}
	err = <-done
	if found == "" {
		t.Fatalf("no %s line on the serial console (qemu: %v); serial log at %s (kept with go test -artifacts); last lines:\n%s",
			marker, err, logPath, strings.Join(tail, "\n"))
	}
	return found
}

func TestQEMUBootRaw(t *testing.T) {
	for _, b := range []boards.Board{boards.GenericAMD64(), boards.GenericARM64()} {
		t.Run(b.Name(), func(t *testing.T) {
			needQEMU(t, b.Arch())
			out := t.TempDir()
			if _, err := Build(context.Background(), testOptions(t, b, out, boards.FormatRaw)); err != nil {
				t.Fatal(err)
			}
			line := bootUntilMarker(t, b.Arch(), filepath.Join(out, b.Name()+".raw"), false)
			want := marker + " release=" + b.Kernel().Release + " root=present"
			if !strings.HasPrefix(line, want) {
				t.Errorf("console: %q, want %q…", line, want)
			}
		})
	}
}

func TestQEMUBootISO(t *testing.T) {
	needQEMU(t, boards.AMD64)
	line := bootUntilMarker(t, boards.AMD64, filepath.Join(buildAll(t), "generic-amd64.iso"), true)
	if !strings.HasPrefix(line, marker+" release=6.12.95+kiln-amd64 root=present") {
		t.Errorf("console: %q", line)
	}
}
