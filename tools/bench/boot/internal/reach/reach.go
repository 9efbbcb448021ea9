//go:build linux

// Package reach is a stand-in for machined in make bench-boot's reach image. Kiln's
// init starts it as it starts machined, and it does only what comes before machined's
// own work: it enters the root, finds the system disk, mounts STATE once init has
// loaded FAT, brings the first Ethernet link up once init has loaded the network
// drivers, and prints Marker. Its command (cmd/reach) links machined's packages, so
// its time over the floor is what the kernel's module insertions, Kiln's init and
// machined's Go start cost a boot before machined does anything of its own.
package reach

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kiln-os/kiln/init/handoff"
	"github.com/kiln-os/kiln/machined/daemon"
	"github.com/kiln-os/kiln/machined/platform"
	"github.com/kiln-os/kiln/networking/link"
)

// Marker starts the line the benchmark waits for; Failed starts the line it fails on.
const (
	Marker = "KILN-REACH-OK"
	Failed = "KILN-REACH-FAILED"
)

const (
	poll  = 20 * time.Millisecond // machined's disk poll
	limit = 2 * time.Minute
)

// Main runs the stand-in; it does not return.
func Main() {
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	line, err := run()
	if err != nil {
		fmt.Fprintf(con, "%s: %v\n", Failed, err)
	} else {
		fmt.Fprintf(con, "%s %s uptime=%s\n", Marker, line, platform.Uptime().Round(time.Millisecond))
	}
	// Exiting would make init restart it; the benchmark stops the VM.
	select {}
}

func run() (string, error) {
	if err := handoff.EnterRoot(); err != nil {
		return "", err
	}
	var disk *platform.Disk
	err := until(func() (err error) {
		disk, err = platform.FindSystemDisk("/sys/class/block", "/dev")
		return err
	})
	if err != nil {
		return "", err
	}
	if err := until(exists(handoff.FATLoaded)); err != nil {
		return "", err
	}
	if err := platform.MountPartition(disk, platform.LabelState, daemon.StateMount); err != nil {
		return "", err
	}
	if err := until(exists(handoff.NetworkDriversLoaded)); err != nil {
		return "", err
	}
	links, err := link.List()
	if err != nil {
		return "", err
	}
	// The link machined's DHCP would take first (link.WaitCarrier).
	for _, l := range links {
		if !l.Physical() {
			continue
		}
		if err := link.SetUp(l.Name); err != nil {
			return "", err
		}
		return fmt.Sprintf("state=%s link=%s", disk.Partitions[platform.LabelState].Dev, l.Name), nil
	}
	return "", errors.New("no Ethernet link")
}

// until calls f every poll until it succeeds, for at most limit.
func until(f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(poll)
	}
}

func exists(path string) func() error {
	return func() error {
		_, err := os.Stat(path)
		return err
	}
}
