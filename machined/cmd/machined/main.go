// Command machined is the Kiln machine daemon. Run as an ordinary process it
// keeps all state under --root (process mode):
//
//	machined --root /tmp/node1 --listen 127.0.0.1:50000
//
// Without a stored configuration it starts in maintenance mode and prints
// the fingerprint of its certificate; apply a configuration with kctl.
// SIGTERM or SIGINT stop its services and end it; a reboot over the API
// re-executes it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kiln-os/kiln/machined/daemon"
	"github.com/kiln-os/kiln/machined/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, daemon.ErrReboot) {
		err = daemon.Reexec()
	}
	if err != nil {
		log.SetFlags(0)
		log.Fatalf("machined: %v", err)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("machined", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "directory holding all state (required)")
	listen := fs.String("listen", daemon.DefaultListen, "machine API address")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	kmsg := fs.String("kmsg", server.DefaultKmsgPath, "kernel log device")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *root == "" {
		return errors.New("--root is required")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	d, err := daemon.New(daemon.Options{
		Root:     *root,
		Listen:   *listen,
		KmsgPath: *kmsg,
		Logger:   logger,
		Console:  stdout,
	})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
