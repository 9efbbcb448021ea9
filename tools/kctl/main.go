// Command kctl is the command-line client of Kiln nodes: it generates machine
// configs and secrets, applies configs and talks to the machine API of one or
// more nodes. The commands live in package cmd.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kiln-os/kiln/tools/kctl/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, cmd.FormatError(err))
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	return cmd.Run(ctx, args, cmd.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}
