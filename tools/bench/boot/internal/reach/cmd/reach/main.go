//go:build linux

// Command reach is the stand-in for machined in make bench-boot's reach image (package
// reach). It links and initialises machined's packages (package reach imports
// machined/daemon; the API server is added here), as machined's own start does before
// its main, so that its size in the initramfs and its Go start are machined's.
package main

import (
	"github.com/kiln-os/kiln/tools/bench/boot/internal/reach"

	_ "github.com/kiln-os/kiln/machined/server"
)

func main() { reach.Main() }
