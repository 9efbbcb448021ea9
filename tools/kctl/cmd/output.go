package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-os/kiln/machined/client"
)

// Output formats of -o/--output.
const (
	formatTable = "table"
	formatYAML  = "yaml"
	formatJSON  = "json"
)

// outputFlag adds -o/--output to c, accepting the given formats (the first
// is the default), and returns where the choice lands.
func outputFlag(c *cobra.Command, formats ...string) *string {
	out := new(string)
	c.Flags().StringVarP(out, "output", "o", formats[0], "output format: "+strings.Join(formats, "|"))
	prev := c.PreRunE
	c.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := checkChoice("--output", *out, formats); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
	return out
}

// checkChoice returns an error when v is not one of choices.
func checkChoice(flag, v string, choices []string) error {
	for _, c := range choices {
		if v == c {
			return nil
		}
	}
	return fmt.Errorf("%s %q: want one of %s", flag, v, strings.Join(choices, ", "))
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// encode writes v as YAML or JSON.
func encode(w io.Writer, format string, v any) error {
	switch format {
	case formatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case formatYAML:
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	default:
		return fmt.Errorf("output format %q cannot encode data", format)
	}
}

// age words how long ago t was, compactly: 42s, 5m3s, 3h5m, 2d3h.
func age(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// bytesHuman words a size in binary units: 512 B, 1.5 KiB, 20 GiB.
func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	s := fmt.Sprintf("%.1f", float64(n)/float64(div))
	s = strings.TrimSuffix(s, ".0")
	return s + " " + string("KMGTPE"[exp]) + "iB"
}

// prefixWriter prefixes every line with a node name. Partial lines are
// held until their newline (or Flush).
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if err := p.emit(p.buf[:i+1]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
}

func (p *prefixWriter) emit(line []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.w, p.prefix); err != nil {
		return err
	}
	_, err := p.w.Write(line)
	return err
}

// Flush writes a held partial line, ending it.
func (p *prefixWriter) Flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	line := append(p.buf, '\n')
	p.buf = nil
	return p.emit(line)
}

// lockedWriter serializes writes of whole chunks.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// streamEach runs fn for every target at once, each writing to its own
// writer: with prefixLines, lines prefixed "NODE: " when there are several
// targets; the plain output otherwise. Failures come back as joined
// NodeErrors.
func streamEach(ctx context.Context, g *globals, prefixLines bool, fn func(ctx context.Context, node string, c *client.Client, w io.Writer) error) error {
	conn, err := g.connect()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	errs := make([]error, len(conn.targets))
	var wg sync.WaitGroup
	for i, node := range conn.targets {
		wg.Go(func() {
			var w io.Writer = &lockedWriter{mu: &mu, w: g.io.Out}
			var pw *prefixWriter
			if prefixLines && len(conn.targets) > 1 {
				pw = &prefixWriter{mu: &mu, w: g.io.Out, prefix: node + ": "}
				w = pw
			}
			c, err := client.New(ctx, node, conn.opts...)
			if err == nil {
				err = fn(ctx, node, c, w)
				c.Close()
			}
			if pw != nil {
				if ferr := pw.Flush(); err == nil {
					err = ferr
				}
			}
			if err != nil {
				errs[i] = &NodeError{Node: node, Err: err}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// joinErrors joins err with more, skipping nils.
func joinErrors(err error, more ...error) error {
	return errors.Join(append([]error{err}, more...)...)
}

// printMessages prints each node's message on its own line, prefixed
// "NODE: " when the command talks to several nodes.
func printMessages[T any](g *globals, res []result[T], msg func(T) string) {
	multi := g.targetCount() > 1
	for _, r := range res {
		m := strings.TrimRight(msg(r.Value), "\n")
		if m == "" {
			continue
		}
		if multi {
			m = r.Node + ": " + strings.ReplaceAll(m, "\n", "\n"+r.Node+": ")
		}
		fmt.Fprintln(g.io.Out, m)
	}
}
