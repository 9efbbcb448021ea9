package cmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/client/clientconfig"
	"github.com/kiln-os/kiln/machined/version"
)

// connection is what a command needs to reach its targets.
type connection struct {
	targets []string
	opts    []client.Option
}

// configPath resolves the client config path from the flag and environment.
func (g *globals) configPath() (string, error) {
	return clientconfig.Path(g.kctlconfig)
}

// loadConfig reads the client config. A missing file yields a nil config
// and no error: --insecure needs none, and the other callers say what to do.
func (g *globals) loadConfig() (*clientconfig.Config, string, error) {
	path, err := g.configPath()
	if err != nil {
		return nil, "", err
	}
	cfg, err := clientconfig.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	return cfg, path, nil
}

// connect works out the targets and the transport security from the flags
// and the client config.
func (g *globals) connect() (*connection, error) {
	insecure := g.insecure || g.fingerprint != ""
	cfg, path, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	var ctx *clientconfig.Context
	if cfg != nil && (g.context != "" || cfg.Context != "") {
		if ctx, _, err = cfg.Current(g.context); err != nil {
			return nil, fmt.Errorf("client config %s: %w", path, err)
		}
	} else if g.context != "" {
		return nil, fmt.Errorf("context %q: there is no client config at %s", g.context, path)
	}

	conn := &connection{}
	switch {
	case len(g.nodes) > 0:
		conn.targets = g.nodes
	case len(g.endpoints) > 0:
		conn.targets = g.endpoints
	case ctx != nil && len(ctx.Nodes) > 0:
		conn.targets = ctx.Nodes
	case ctx != nil:
		conn.targets = ctx.Endpoints
	}
	if len(conn.targets) == 0 {
		return nil, errors.New("no nodes to talk to: pass --nodes (or --endpoints), or set them in the client config's context")
	}

	ua := client.WithUserAgent("kctl/" + version.Tag)
	if insecure {
		conn.opts = []client.Option{client.WithInsecure(g.fingerprint), ua}
		return conn, nil
	}
	if ctx == nil {
		return nil, fmt.Errorf("no client config at %s: run 'kctl config merge kctlconfig' after 'kctl gen config', or pass --insecure for a node in maintenance mode", path)
	}
	if !ctx.HasCredentials() {
		return nil, fmt.Errorf("client config %s: the context has no ca, crt and key: pass --insecure for a node in maintenance mode", path)
	}
	ca, crt, key, err := ctx.PEM()
	if err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	conn.opts = []client.Option{client.WithMTLS(ca, crt, key), ua}
	return conn, nil
}

// result is what one node answered.
type result[T any] struct {
	Node  string
	Value T
}

// onEach calls fn for every target at once and returns the answers of the
// nodes that answered, in target order, and the failures, one NodeError per
// node, joined.
func onEach[T any](ctx context.Context, g *globals, fn func(ctx context.Context, c *client.Client) (T, error)) ([]result[T], error) {
	conn, err := g.connect()
	if err != nil {
		return nil, err
	}
	type answer struct {
		value T
		err   error
	}
	answers := make([]answer, len(conn.targets))
	var wg sync.WaitGroup
	for i, node := range conn.targets {
		wg.Go(func() {
			c, err := client.New(ctx, node, conn.opts...)
			if err != nil {
				answers[i].err = err
				return
			}
			defer c.Close()
			answers[i].value, answers[i].err = fn(ctx, c)
		})
	}
	wg.Wait()
	var (
		out  []result[T]
		errs []error
	)
	for i, a := range answers {
		if a.err != nil {
			errs = append(errs, &NodeError{Node: conn.targets[i], Err: a.err})
			continue
		}
		out = append(out, result[T]{Node: conn.targets[i], Value: a.value})
	}
	return out, errors.Join(errs...)
}

// targetCount is how many nodes a command will talk to; 0 when that cannot
// be worked out (the command's own call then reports why).
func (g *globals) targetCount() int {
	conn, err := g.connect()
	if err != nil {
		return 0
	}
	return len(conn.targets)
}
