// Command testmachined stands in for machined in init's QEMU test. First run: it
// enters the root when init started it from the initramfs, reports what init set up
// (PID 1 parent, read-only root, cgroup2, writable /etc, coldplugged driver, init's
// RSS) and crashes. Second run (init restarted it, from the root): it leaves an
// orphan for init to reap and asks PID 1 to power off with SIGUSR2.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-os/kiln/init/handoff"
)

func main() {
	// Started from the initramfs, it enters the root as machined does.
	early := os.Getenv(handoff.EarlyEnv) == "1"
	if err := handoff.EnterRoot(); err != nil {
		fmt.Printf("testmachined: %v\n", err)
		os.Exit(3)
	}
	const counter = "/run/testmachined-runs"
	b, _ := os.ReadFile(counter)
	run := len(b) + 1
	_ = os.WriteFile(counter, append(b, 'x'), 0o644)

	mounts, _ := os.ReadFile("/proc/mounts")
	rootRO := false
	cgroup2 := false
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		if f[1] == "/" && f[2] == "squashfs" && strings.HasPrefix(f[3], "ro") {
			rootRO = true
		}
		if f[1] == "/sys/fs/cgroup" && f[2] == "cgroup2" {
			cgroup2 = true
		}
	}
	// Drivers load beside machined's start; like machined, wait for init's mark (hang
	// protection only: without the mark the line below says drivers=false), and write
	// to /etc only after a mark (package handoff).
	drivers := waitMark(handoff.DriversLoaded)
	modules := waitMark(handoff.ModulesLoaded)
	_, err := os.Stat("/sys/module/dummy")
	dummy := err == nil && modules
	_, err = os.Stat("/sys/class/net/dummy0")
	dummy0 := err == nil
	etcW := os.WriteFile("/etc/hostname", []byte("kiln-test\n"), 0o644) == nil
	_, err = os.Stat("/sys/module/virtio_net")
	coldplug := err == nil
	// The switch deletes the initramfs's files: init's own binary among them, which
	// the supervising init (re-executed from /proc/self/exe) still runs. PID 1 may be
	// in that exec now, so look again for a while (hang protection only).
	initramfsFreed := false
	for range 50 {
		if exe, _ := os.Readlink("/proc/1/exe"); strings.HasSuffix(exe, " (deleted)") {
			initramfsFreed = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	fmt.Printf("testmachined: run=%d early=%v ppid=%d root-ro=%v cgroup2=%v etc-writable=%v drivers=%v virtio_net=%v dummy=%v dummy0=%v initramfs-freed=%v init:%s\n",
		run, early, os.Getppid(), rootRO, cgroup2, etcW, drivers, coldplug, dummy, dummy0, initramfsFreed, vmRSS("/proc/1/status"))

	if run == 1 {
		os.Exit(7)
	}
	// An orphan: a short-lived child starts a grandchild and exits, so the grandchild
	// is reparented to PID 1, which must reap it.
	if len(os.Args) > 1 && os.Args[1] == "orphan" {
		time.Sleep(300 * time.Millisecond)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "spawn" {
		exec.Command("/sbin/machined", "orphan").Start()
		return
	}
	smaps()
	_ = exec.Command("/sbin/machined", "spawn").Run()
	time.Sleep(time.Second)
	fmt.Printf("testmachined: zombies=%d; asking init to power off\n", zombies())
	_ = syscall.Kill(1, syscall.SIGUSR2)
	time.Sleep(time.Hour)
}

// waitMark waits up to a minute for init's mark at path and reports whether it came
// (hang protection only).
func waitMark(path string) bool {
	for range 600 {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func vmRSS(path string) string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmRSS", "RssAnon", "RssFile", "RssShmem"} {
			if strings.HasPrefix(l, k+":") {
				out = append(out, strings.ToLower(k)+"="+strings.Join(strings.Fields(strings.TrimPrefix(l, k+":")), ""))
			}
		}
	}
	return strings.Join(out, " ")
}

// zombies counts processes in state Z.
func zombies() int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) && s[i+2] == 'Z' {
			n++
		}
	}
	return n
}

// smaps prints PID 1's mappings with more than 256 kB resident.
func smaps() {
	b, _ := os.ReadFile("/proc/1/smaps")
	var head string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			head = l
		}
		if n, _ := strconv.Atoi(safeField(f, 1)); len(f) == 3 && f[0] == "Rss:" && n >= 64 {
			fmt.Printf("testmachined: smaps %s kB %s\n", f[1], head)
		}
	}
}

func safeField(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}
