// Command machined is the Kiln machine daemon.
//
// Run as an ordinary process it keeps all state under --root (process mode):
//
//	machined --root /tmp/node1 --listen 127.0.0.1:50000
//
// Without a stored configuration it starts in maintenance mode and prints
// the fingerprint of its certificate; apply a configuration with kctl.
// SIGTERM or SIGINT stop its services and end it; a reboot over the API
// re-executes it.
//
// Started by Kiln's init (PID 1) without arguments it is the node's daemon
// (node mode, also forced with --platform node): state on the STATE partition,
// /var on EPHEMERAL, the API on every address at port 50000, the host network,
// and reboots and power-offs carried out by init. It tells init's child from
// anything else by its parent, PID 1, and KILN_INIT=1 in its environment, which
// init sets.
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

	"github.com/kiln-os/kiln/init/handoff"
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

// underKilnInit reports whether the parent is Kiln's init: PID 1, which gives
// machined KILN_INIT=1 in both of its phases (it starts machined before it
// re-executes itself as the supervisor, and restarts it from the supervisor).
func underKilnInit() bool {
	return os.Getppid() == 1 && os.Getenv("KILN_INIT") == "1"
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("machined", flag.ContinueOnError)
	fs.SetOutput(stderr)
	platform := fs.String("platform", "auto", "process, node, or auto: node when started by Kiln's init without --root")
	root := fs.String("root", "", "directory holding all state (process mode; required there)")
	listen := fs.String("listen", "", "machine API address (default "+daemon.DefaultListen+" in process mode, "+daemon.NodeListen+" on a node)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	kmsg := fs.String("kmsg", server.DefaultKmsgPath, "kernel log device")
	debugActions := fs.Bool("debug-actions", false, "allow test-only debug actions such as crash (on a node: kiln.debug on the kernel command line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	mode := *platform
	if mode == "auto" {
		mode = daemon.PlatformProcess
		if *root == "" && underKilnInit() {
			mode = daemon.PlatformNode
		}
	}
	switch mode {
	case daemon.PlatformProcess:
		return runProcess(ctx, *root, *listen, *kmsg, *debugActions, lvl, stdout, stderr)
	case daemon.PlatformNode:
		if *root != "" {
			return errors.New("--root is for process mode; a node keeps its state on its partitions")
		}
		return runNode(ctx, *listen, *kmsg, *debugActions, lvl, stdout, stderr)
	}
	return fmt.Errorf("--platform %q: want process, node or auto", *platform)
}

func runProcess(ctx context.Context, root, listen, kmsg string, debugActions bool, lvl slog.Level, stdout, stderr io.Writer) error {
	if root == "" {
		return errors.New("--root is required (or run on a Kiln node under its init)")
	}
	if listen == "" {
		listen = daemon.DefaultListen
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	d, err := daemon.New(daemon.Options{
		Root:         root,
		Listen:       listen,
		KmsgPath:     kmsg,
		Logger:       logger,
		Console:      stdout,
		DebugActions: debugActions,
	})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// runNode runs machined as the daemon of a Kiln node. Its output goes to the
// console init gave it; the console itself gets the banner, the maintenance
// instructions and the readiness line.
func runNode(ctx context.Context, listen, kmsg string, debugActions bool, lvl slog.Level, stdout, stderr io.Writer) error {
	// Started from the initramfs beside the root mount, machined waits for the
	// switch of root before it opens any file.
	if err := handoff.EnterRoot(); err != nil {
		return err
	}
	if listen == "" {
		listen = daemon.NodeListen
	}
	console := stdout
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		defer f.Close()
		console = f
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	node, err := daemon.PrepareNode(daemon.NodeOptions{Log: logger, Console: console})
	if err != nil {
		return err
	}
	if node.Debug {
		debugActions = true
		if lvl > slog.LevelDebug {
			logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	powered := false
	d, err := daemon.New(daemon.Options{
		Platform:         daemon.PlatformNode,
		StateDir:         node.StateDir,
		LogDir:           node.LogDir,
		RunDir:           "/run/machined",
		Listen:           listen,
		KmsgPath:         kmsg,
		Logger:           logger,
		Console:          console,
		Hostname:         daemon.PlatformHostname{},
		FallbackHostname: node.FallbackHostname,
		Network:          node.Network(),
		BeforeActivate:   node.PrepareServices,
		DebugActions:     debugActions,
		Power: func(a daemon.PowerAction) error {
			powered = true
			return node.Power(a)
		},
	})
	if err != nil {
		return err
	}
	err = d.Run(ctx)
	if !powered {
		// Stopped by init (its own shutdown) or failed: leave the disks
		// clean; init unmounts what is left.
		node.Net.Close()
		if uerr := node.Unmount(); uerr != nil {
			logger.Error("unmount", "err", uerr)
		}
	}
	return err
}
