package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

type processRow struct {
	Node     string `json:"node" yaml:"node"`
	PID      int32  `json:"pid" yaml:"pid"`
	PPID     int32  `json:"ppid" yaml:"ppid"`
	Name     string `json:"name" yaml:"name"`
	State    string `json:"state" yaml:"state"`
	RSSBytes uint64 `json:"rssBytes" yaml:"rssBytes"`
	// CPU time in user and kernel mode, in seconds.
	UserCPU     float64 `json:"userCPU" yaml:"userCPU"`
	SystemCPU   float64 `json:"systemCPU" yaml:"systemCPU"`
	CommandLine string  `json:"commandLine" yaml:"commandLine"`
}

func newGetProcessesCommand(g *globals) *cobra.Command {
	return getView(g, "processes", "List the processes of each node with their resident memory and CPU time",
		func(ctx context.Context, c *client.Client) (*machine.ProcessesResponse, error) {
			return c.Processes(ctx, &machine.ProcessesRequest{})
		},
		func(node string, r *machine.ProcessesResponse) []processRow {
			var out []processRow
			for _, p := range r.GetProcesses() {
				out = append(out, processRow{Node: node, PID: p.GetPid(), PPID: p.GetPpid(), Name: p.GetName(),
					State: p.GetState(), RSSBytes: p.GetRssBytes(), CommandLine: p.GetCommandLine(),
					UserCPU: p.GetUserCpu().AsDuration().Seconds(), SystemCPU: p.GetSystemCpu().AsDuration().Seconds()})
			}
			return out
		},
		[]string{"NODE", "PID", "PPID", "STATE", "RSS", "CPU", "NAME", "COMMAND"},
		func(p processRow) []string {
			return []string{p.Node, fmt.Sprint(p.PID), fmt.Sprint(p.PPID), p.State, bytesHuman(p.RSSBytes),
				fmt.Sprintf("%.2fs", p.UserCPU+p.SystemCPU), p.Name, p.CommandLine}
		})
}

type mountRow struct {
	Node    string `json:"node" yaml:"node"`
	Source  string `json:"source" yaml:"source"`
	Target  string `json:"target" yaml:"target"`
	FSType  string `json:"fstype" yaml:"fstype"`
	Options string `json:"options" yaml:"options"`
}

func newGetMountsCommand(g *globals) *cobra.Command {
	return getView(g, "mounts", "List the mounted filesystems of each node",
		func(ctx context.Context, c *client.Client) (*machine.MountsResponse, error) {
			return c.Mounts(ctx, &machine.MountsRequest{})
		},
		func(node string, r *machine.MountsResponse) []mountRow {
			var out []mountRow
			for _, m := range r.GetMounts() {
				out = append(out, mountRow{Node: node, Source: m.GetSource(), Target: m.GetTarget(), FSType: m.GetFstype(), Options: m.GetOptions()})
			}
			return out
		},
		[]string{"NODE", "SOURCE", "TARGET", "TYPE", "OPTIONS"},
		func(m mountRow) []string { return []string{m.Node, m.Source, m.Target, m.FSType, m.Options} })
}

type socketRow struct {
	Node     string `json:"node" yaml:"node"`
	Protocol string `json:"protocol" yaml:"protocol"`
	Address  string `json:"address" yaml:"address"`
	Port     uint32 `json:"port" yaml:"port"`
	State    string `json:"state,omitempty" yaml:"state,omitempty"`
}

func newGetNetstatCommand(g *globals) *cobra.Command {
	return getView(g, "netstat", "List the listening TCP and bound UDP sockets of each node",
		func(ctx context.Context, c *client.Client) (*machine.NetstatResponse, error) {
			return c.Netstat(ctx, &machine.NetstatRequest{})
		},
		func(node string, r *machine.NetstatResponse) []socketRow {
			var out []socketRow
			for _, s := range r.GetSockets() {
				out = append(out, socketRow{Node: node, Protocol: s.GetProtocol(), Address: s.GetLocalAddress(), Port: s.GetLocalPort(), State: s.GetState()})
			}
			return out
		},
		[]string{"NODE", "PROTO", "ADDRESS", "PORT", "STATE"},
		func(s socketRow) []string {
			return []string{s.Node, s.Protocol, s.Address, fmt.Sprint(s.Port), s.State}
		})
}
