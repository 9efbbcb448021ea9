//go:build linux

// Command kiln-proxy is Kiln's eBPF service proxy as a standalone process: it opens
// (or adopts) the pinned datapath, programs it from the Kubernetes API with the
// agent until SIGTERM, and leaves the datapath pinned when it exits, so Service
// traffic keeps flowing while it restarts. NodePorts, externalIPs and LoadBalancer
// IPs are served on the links named by --external-links; the health-check node
// ports of externalTrafficPolicy Local Services are answered on
// --health-check-address (all addresses by default). --external-lb=maglev makes a new
// flow to those frontends pick its backend by consistent hashing (the same on every
// node that uses it) instead of at random. machined runs the same agent as a
// service on every node; this binary is for tests and for running it by hand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-os/kiln/networking/serviceproxy"
	"github.com/kiln-os/kiln/networking/serviceproxy/agent"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		log.Printf("kiln-proxy: %v", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("kiln-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file; empty: the in-cluster service account")
	cgroup := fs.String("cgroup", "/sys/fs/cgroup", "cgroup v2 directory whose sockets are balanced")
	pinDir := fs.String("pin-dir", serviceproxy.DefaultPinDir, "bpffs directory for the pinned maps and links")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:10249", "address to serve /metrics on; empty: none")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	nodeName := fs.String("node-name", os.Getenv("NODE_NAME"), "this node's name, for internalTrafficPolicy Local")
	minInterval := fs.Duration("min-sync-interval", agent.DefaultMinInterval, "least time between two datapath updates")
	externalLinks := fs.String("external-links", "", "comma-separated links on which NodePorts, externalIPs and LoadBalancer IPs are served (the node's uplinks, and a VXLAN device between nodes); empty: none")
	externalLB := fs.String("external-lb", serviceproxy.ExternalRandom.String(), "how a new flow to a NodePort, externalIP or LoadBalancer IP picks its backend: random, or maglev (consistent hashing: every node picks the same backend for a flow, for ECMP load balancers; all nodes must use it)")
	healthAddr := fs.String("health-check-address", "", "address the health-check node ports of externalTrafficPolicy Local Services listen on; empty: all addresses, as kube-proxy")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	links, err := parseLinks(*externalLinks)
	if err != nil {
		return fmt.Errorf("--external-links: %w", err)
	}
	lb, err := serviceproxy.ParseExternalLB(*externalLB)
	if err != nil {
		return fmt.Errorf("--external-lb: %w", err)
	}
	var healthListen netip.Addr
	if *healthAddr != "" {
		if healthListen, err = netip.ParseAddr(*healthAddr); err != nil {
			return fmt.Errorf("--health-check-address: %w", err)
		}
	}

	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.UserAgent = "kiln-proxy"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	p, err := serviceproxy.Open(serviceproxy.Config{Cgroup: *cgroup, PinDir: *pinDir, Logger: logger, ExternalLinks: links, ExternalLB: lb})
	if err != nil {
		return fmt.Errorf("open the datapath: %w", err)
	}
	// Close, not Remove: the pinned programs keep balancing with the last state.
	defer p.Close()
	health := serviceproxy.NewHealthServer(healthListen, logger)
	defer health.Close()

	a, err := agent.New(agent.Config{
		Client:      client,
		Datapath:    p,
		Logger:      logger,
		Registerer:  reg,
		NodeName:    *nodeName,
		MinInterval: *minInterval,
		Health:      health,
	})
	if err != nil {
		return err
	}

	srvErr := make(chan error, 1)
	if *metricsAddr != "" {
		l, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				srvErr <- fmt.Errorf("metrics server: %w", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		logger.Info("serving metrics", "addr", l.Addr().String())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	select {
	case err := <-srvErr:
		cancel()
		return errors.Join(err, <-runErr) // the datapath stays open until Run is done
	case err := <-runErr:
		return err
	}
}

// parseLinks reads --external-links: link names, comma-separated. The node's
// addresses on each are read from the link when the datapath opens.
func parseLinks(s string) ([]serviceproxy.ExternalLink, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []serviceproxy.ExternalLink
	seen := map[string]bool{}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			return nil, fmt.Errorf("%q: empty link name", s)
		case len(name) > 15 || strings.ContainsAny(name, "/ \t"):
			return nil, fmt.Errorf("%q is not a link name", name)
		case seen[name]:
			return nil, fmt.Errorf("link %q listed twice", name)
		}
		seen[name] = true
		out = append(out, serviceproxy.ExternalLink{Name: name})
	}
	return out, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or pass --kubeconfig): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}
