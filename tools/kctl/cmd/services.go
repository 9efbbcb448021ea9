package cmd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

// serviceRow is one service on one node, as -o json|yaml prints it.
type serviceRow struct {
	Node      string         `json:"node" yaml:"node"`
	ID        string         `json:"id" yaml:"id"`
	Kind      string         `json:"kind,omitempty" yaml:"kind,omitempty"`
	State     string         `json:"state" yaml:"state"`
	Health    string         `json:"health" yaml:"health"`
	Restarts  uint32         `json:"restarts" yaml:"restarts"`
	PID       int32          `json:"pid,omitempty" yaml:"pid,omitempty"`
	Since     *time.Time     `json:"since,omitempty" yaml:"since,omitempty"`
	DependsOn []string       `json:"dependsOn,omitempty" yaml:"dependsOn,omitempty"`
	Message   string         `json:"healthMessage,omitempty" yaml:"healthMessage,omitempty"`
	Events    []serviceEvent `json:"events,omitempty" yaml:"events,omitempty"`
}

type serviceEvent struct {
	Time    time.Time `json:"time" yaml:"time"`
	State   string    `json:"state" yaml:"state"`
	Message string    `json:"message" yaml:"message"`
}

// health words a service's health: OK, Fail, or "-" without a check.
func health(h *machine.ServiceHealth) string {
	switch {
	case !h.GetChecked():
		return "-"
	case h.GetHealthy():
		return "OK"
	default:
		return "Fail"
	}
}

func toServiceRow(node string, s *machine.ServiceInfo) serviceRow {
	r := serviceRow{
		Node: node, ID: s.GetId(), Kind: s.GetKind(), State: s.GetState(), Health: health(s.GetHealth()),
		Restarts: s.GetRestarts(), PID: s.GetPid(), DependsOn: s.GetDependsOn(),
		Message: s.GetHealth().GetLastMessage(),
	}
	if s.GetStateSince() != nil {
		t := s.GetStateSince().AsTime()
		r.Since = &t
	}
	for _, e := range s.GetEvents() {
		r.Events = append(r.Events, serviceEvent{Time: e.GetTime().AsTime(), State: e.GetState(), Message: e.GetMessage()})
	}
	return r
}

// listServices returns the services of every node that answered, and the
// nodes that answered.
func listServices(ctx context.Context, g *globals) ([]serviceRow, []string, error) {
	res, err := onEach(ctx, g, func(ctx context.Context, c *client.Client) (*machine.ServiceListResponse, error) {
		return c.ServiceList(ctx, &machine.ServiceListRequest{})
	})
	var (
		rows     []serviceRow
		answered []string
	)
	for _, r := range res {
		answered = append(answered, r.Node)
		for _, s := range r.Value.GetServices() {
			rows = append(rows, toServiceRow(r.Node, s))
		}
	}
	return rows, answered, err
}

func newServicesCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "services",
		Short: "List the services of each node",
		Args:  cobra.NoArgs,
	}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		rows, _, callErr := listServices(cmd.Context(), g)
		if *format != formatTable {
			if rows == nil {
				rows = []serviceRow{}
			}
			if err := encode(g.io.Out, *format, rows); err != nil {
				return err
			}
			return callErr
		}
		if len(rows) == 0 && callErr != nil {
			return callErr
		}
		now := time.Now()
		t := newTable(g.io.Out, "NODE", "SERVICE", "STATE", "HEALTH", "RESTARTS", "SINCE")
		for _, r := range rows {
			since := ""
			if r.Since != nil {
				since = age(*r.Since, now)
			}
			t.row(r.Node, r.ID, r.State, r.Health, fmt.Sprint(r.Restarts), since)
		}
		if err := t.flush(); err != nil {
			return err
		}
		return callErr
	}
	return c
}

func newServiceCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "service NAME [start|stop|restart|status]",
		Short: "Show, start, stop or restart one service",
		Long:  "Show the status of service NAME on each node (the default action), or start, stop or restart it.",
		Args:  cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return []string{"start", "stop", "restart", "status"}, cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
	}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.RunE = func(cmd *cobra.Command, args []string) error {
		name, action := args[0], "status"
		if len(args) == 2 {
			action = args[1]
		}
		type call func(context.Context, *machine.ServiceRequest, ...grpc.CallOption) (*machine.ServiceResponse, error)
		var pick func(c *client.Client) call
		switch action {
		case "status":
			return serviceStatus(cmd.Context(), g, name, *format)
		case "start":
			pick = func(c *client.Client) call { return c.ServiceStart }
		case "stop":
			pick = func(c *client.Client) call { return c.ServiceStop }
		case "restart":
			pick = func(c *client.Client) call { return c.ServiceRestart }
		default:
			return fmt.Errorf("service action %q: want start, stop, restart or status", action)
		}
		res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.ServiceResponse, error) {
			return pick(c)(ctx, &machine.ServiceRequest{Id: name})
		})
		printMessages(g, res, func(r *machine.ServiceResponse) string { return r.GetMessage() })
		return err
	}
	return c
}

func serviceStatus(ctx context.Context, g *globals, name, format string) error {
	all, answered, callErr := listServices(ctx, g)
	var rows []serviceRow
	found := map[string]bool{}
	for _, r := range all {
		if r.ID == name {
			rows = append(rows, r)
			found[r.Node] = true
		}
	}
	// A node that answered without the service is a failure of that node.
	var missing []error
	for _, node := range answered {
		if !found[node] {
			missing = append(missing, &NodeError{Node: node, Err: status.Errorf(codes.NotFound, "no service %q", name)})
		}
	}
	callErr = joinErrors(callErr, missing...)
	if format != formatTable {
		if rows == nil {
			rows = []serviceRow{}
		}
		if err := encode(g.io.Out, format, rows); err != nil {
			return err
		}
		return callErr
	}
	now := time.Now()
	for i, r := range rows {
		if i > 0 {
			fmt.Fprintln(g.io.Out)
		}
		t := newTable(g.io.Out, "NODE", r.Node)
		t.row("ID", r.ID)
		t.row("KIND", r.Kind)
		t.row("STATE", r.State)
		t.row("HEALTH", r.Health)
		if r.Message != "" {
			t.row("HEALTH MESSAGE", r.Message)
		}
		t.row("RESTARTS", fmt.Sprint(r.Restarts))
		if r.PID != 0 {
			t.row("PID", fmt.Sprint(r.PID))
		}
		if r.Since != nil {
			t.row("SINCE", r.Since.UTC().Format(time.RFC3339)+" ("+age(*r.Since, now)+" ago)")
		}
		t.row("DEPENDS ON", strings.Join(r.DependsOn, ", "))
		for j, e := range r.Events {
			key := " "
			if j == 0 {
				key = "EVENTS"
			}
			t.row(key, fmt.Sprintf("[%s]: %s (%s ago)", e.State, e.Message, age(e.Time, now)))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return callErr
}
