package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

// stream is a server stream of T.
type stream[T any] interface {
	Recv() (T, error)
}

// drain receives from s until it ends, handing each message to fn. The end
// of the stream and an interrupt by the user are not errors.
func drain[T any](ctx context.Context, s stream[T], fn func(T) error) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}

func newLogsCommand(g *globals) *cobra.Command {
	var (
		follow bool
		tail   int32
	)
	c := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the log of a service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return streamEach(cmd.Context(), g, true, func(ctx context.Context, _ string, c *client.Client, w io.Writer) error {
				s, err := c.Logs(ctx, &machine.LogsRequest{Id: args[0], Follow: follow, TailLines: tail})
				if err != nil {
					return err
				}
				return drain(ctx, s, func(m *machine.LogChunk) error {
					_, err := w.Write(m.GetData())
					return err
				})
			})
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	c.Flags().Int32Var(&tail, "tail", -1, "lines of history to print first (-1: all that are kept)")
	return c
}

// dmesgLine formats a kernel log entry like dmesg(1): [seconds.micros] text.
func dmesgLine(e *machine.DmesgEntry) string {
	d := e.GetSinceBoot().AsDuration()
	return fmt.Sprintf("[%5d.%06d] %s\n", int64(d/time.Second), int64(d%time.Second/time.Microsecond), strings.TrimRight(e.GetMessage(), "\n"))
}

func newDmesgCommand(g *globals) *cobra.Command {
	var (
		follow bool
		tail   int32
	)
	c := &cobra.Command{
		Use:   "dmesg",
		Short: "Print the kernel log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return streamEach(cmd.Context(), g, true, func(ctx context.Context, _ string, c *client.Client, w io.Writer) error {
				s, err := c.Dmesg(ctx, &machine.DmesgRequest{Follow: follow, Tail: tail})
				if err != nil {
					return err
				}
				return drain(ctx, s, func(e *machine.DmesgEntry) error {
					_, err := io.WriteString(w, dmesgLine(e))
					return err
				})
			})
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries")
	c.Flags().Int32Var(&tail, "tail", 0, "entries of history to print first (0: all)")
	return c
}

// eventRecord is one event as -o json prints it (one JSON object a line).
type eventRecord struct {
	Node       string            `json:"node"`
	ID         uint64            `json:"id"`
	Time       time.Time         `json:"time"`
	Type       string            `json:"type"`
	Message    string            `json:"message"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// eventLine formats an event as one line: time, type, message, attributes
// (sorted key=value).
func eventLine(e *machine.Event) string {
	var b strings.Builder
	b.WriteString(e.GetTime().AsTime().UTC().Format(time.RFC3339Nano))
	b.WriteString(" ")
	b.WriteString(e.GetType())
	if m := e.GetMessage(); m != "" {
		b.WriteString(" ")
		b.WriteString(oneLine(m))
	}
	attrs := e.GetAttributes()
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		fmt.Fprintf(&b, " %s=%q", k, attrs[k])
	}
	b.WriteString("\n")
	return b.String()
}

func newEventsCommand(g *globals) *cobra.Command {
	var (
		follow bool
		tail   int32
	)
	c := &cobra.Command{
		Use:   "events",
		Short: "Print machined's events",
		Long: `Print machined's events, one a line: time, type, message and key="value"
attributes; with -o json, one JSON object a line.`,
		Args: cobra.NoArgs,
	}
	format := outputFlag(c, "text", formatJSON)
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		return streamEach(cmd.Context(), g, *format != formatJSON, func(ctx context.Context, node string, c *client.Client, w io.Writer) error {
			s, err := c.Events(ctx, &machine.EventsRequest{Follow: follow, TailEvents: tail})
			if err != nil {
				return err
			}
			return drain(ctx, s, func(e *machine.Event) error {
				if *format == formatJSON {
					b, err := json.Marshal(eventRecord{
						Node: node, ID: e.GetId(), Time: e.GetTime().AsTime(), Type: e.GetType(),
						Message: e.GetMessage(), Attributes: e.GetAttributes(),
					})
					if err != nil {
						return err
					}
					_, err = w.Write(append(b, '\n'))
					return err
				}
				_, err := io.WriteString(w, eventLine(e))
				return err
			})
		})
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	c.Flags().Int32Var(&tail, "tail", -1, "events of history to print first (-1: all that are kept)")
	return c
}
