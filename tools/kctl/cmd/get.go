package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
)

func newGetCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "get",
		Short: "Read state from nodes",
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(newGetConfigCommand(g), newGetDisksCommand(g),
		newGetLinksCommand(g), newGetAddressesCommand(g), newGetRoutesCommand(g),
		newGetResolversCommand(g), newGetHostnameCommand(g), newGetTimeStatusCommand(g),
		newGetLeasesCommand(g), newGetProcessesCommand(g), newGetMountsCommand(g), newGetNetstatCommand(g))
	return c
}

func newGetConfigCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the machine config in force (secrets redacted unless you are an admin)",
		Long: `Print the machine config in force on each node, as YAML. Secrets are redacted
unless the client certificate has the os:admin role. With several nodes, each
node's config is a YAML stream of its own, preceded by a "# node: NODE" line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.GetConfigResponse, error) {
				return c.GetConfig(ctx, &machine.GetConfigRequest{})
			})
			multi := g.targetCount() > 1
			for i, r := range res {
				if multi {
					if i > 0 {
						fmt.Fprintln(g.io.Out, "---")
					}
					fmt.Fprintf(g.io.Out, "# node: %s\n", r.Node)
				}
				data := r.Value.GetData()
				g.io.Out.Write(data) //nolint:errcheck // a failed stdout write has no one to tell
				if len(data) > 0 && data[len(data)-1] != '\n' {
					fmt.Fprintln(g.io.Out)
				}
			}
			return err
		},
	}
}

// diskRow is one disk as -o json|yaml prints it.
type diskRow struct {
	Node       string `json:"node" yaml:"node"`
	Name       string `json:"name" yaml:"name"`
	SizeBytes  uint64 `json:"sizeBytes" yaml:"sizeBytes"`
	Model      string `json:"model,omitempty" yaml:"model,omitempty"`
	Serial     string `json:"serial,omitempty" yaml:"serial,omitempty"`
	Rotational bool   `json:"rotational" yaml:"rotational"`
	ReadOnly   bool   `json:"readOnly" yaml:"readOnly"`
	SystemDisk bool   `json:"systemDisk" yaml:"systemDisk"`
}

func newGetDisksCommand(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "disks",
		Short: "List the block devices of each node",
		Args:  cobra.NoArgs,
	}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		res, callErr := onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.DisksResponse, error) {
			return c.Disks(ctx, &machine.DisksRequest{})
		})
		rows := []diskRow{}
		for _, r := range res {
			for _, d := range r.Value.GetDisks() {
				rows = append(rows, diskRow{
					Node: r.Node, Name: d.GetName(), SizeBytes: d.GetSizeBytes(), Model: d.GetModel(), Serial: d.GetSerial(),
					Rotational: d.GetRotational(), ReadOnly: d.GetReadOnly(), SystemDisk: d.GetSystemDisk(),
				})
			}
		}
		if *format != formatTable {
			if err := encode(g.io.Out, *format, rows); err != nil {
				return err
			}
			return callErr
		}
		if len(res) == 0 && callErr != nil {
			return callErr
		}
		t := newTable(g.io.Out, "NODE", "DISK", "SIZE", "MODEL", "SERIAL", "TYPE", "READ-ONLY", "SYSTEM")
		for _, d := range rows {
			typ := "SSD"
			if d.Rotational {
				typ = "HDD"
			}
			t.row(d.Node, d.Name, bytesHuman(d.SizeBytes), d.Model, d.Serial, typ, yesNo(d.ReadOnly), yesNo(d.SystemDisk))
		}
		if err := t.flush(); err != nil {
			return err
		}
		return callErr
	}
	return c
}

// getView is a `kctl get` subcommand for a read-only view: call asks each
// node, rows turns one answer into rows (already tagged with the node), and
// the table columns come from header and cells.
func getView[Resp any, Row any](g *globals, use, short string,
	call func(ctx context.Context, c *client.Client) (Resp, error),
	rows func(node string, r Resp) []Row,
	header []string, cells func(Row) []string,
) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		res, callErr := onEach(cmd.Context(), g, call)
		all := []Row{}
		for _, r := range res {
			all = append(all, rows(r.Node, r.Value)...)
		}
		if *format != formatTable {
			if err := encode(g.io.Out, *format, all); err != nil {
				return err
			}
			return callErr
		}
		if len(res) == 0 && callErr != nil {
			return callErr
		}
		t := newTable(g.io.Out, header...)
		for _, r := range all {
			t.row(cells(r)...)
		}
		if err := t.flush(); err != nil {
			return err
		}
		return callErr
	}
	return c
}

// linkRow is one network link as -o json|yaml prints it.
type linkRow struct {
	Node         string `json:"node" yaml:"node"`
	Name         string `json:"name" yaml:"name"`
	Index        uint32 `json:"index" yaml:"index"`
	Type         string `json:"type" yaml:"type"`
	HardwareAddr string `json:"hardwareAddr,omitempty" yaml:"hardwareAddr,omitempty"`
	MTU          uint32 `json:"mtu" yaml:"mtu"`
	Up           bool   `json:"up" yaml:"up"`
	Carrier      bool   `json:"carrier" yaml:"carrier"`
	Master       string `json:"master,omitempty" yaml:"master,omitempty"`
	Managed      bool   `json:"managed" yaml:"managed"`
}

func upDown(b bool) string {
	if b {
		return "up"
	}
	return "down"
}

func newGetLinksCommand(g *globals) *cobra.Command {
	return getView(g, "links", "List the network links of each node",
		func(ctx context.Context, c *client.Client) (*machine.LinksResponse, error) {
			return c.Links(ctx, &machine.LinksRequest{})
		},
		func(node string, r *machine.LinksResponse) []linkRow {
			var out []linkRow
			for _, l := range r.GetLinks() {
				out = append(out, linkRow{Node: node, Name: l.GetName(), Index: l.GetIndex(), Type: l.GetType(),
					HardwareAddr: l.GetHardwareAddr(), MTU: l.GetMtu(), Up: l.GetUp(), Carrier: l.GetCarrier(),
					Master: l.GetMaster(), Managed: l.GetManaged()})
			}
			return out
		},
		[]string{"NODE", "LINK", "TYPE", "HWADDR", "MTU", "STATE", "CARRIER", "MASTER", "KILN"},
		func(l linkRow) []string {
			return []string{l.Node, l.Name, l.Type, l.HardwareAddr, strconv.Itoa(int(l.MTU)), upDown(l.Up),
				yesNo(l.Carrier), l.Master, yesNo(l.Managed)}
		})
}

// addressRow is one address as -o json|yaml prints it.
type addressRow struct {
	Node    string `json:"node" yaml:"node"`
	Link    string `json:"link" yaml:"link"`
	Address string `json:"address" yaml:"address"`
	Scope   string `json:"scope" yaml:"scope"`
	Source  string `json:"source,omitempty" yaml:"source,omitempty"`
	Dynamic bool   `json:"dynamic" yaml:"dynamic"`
}

func newGetAddressesCommand(g *globals) *cobra.Command {
	return getView(g, "addresses", "List the IP addresses of each node",
		func(ctx context.Context, c *client.Client) (*machine.AddressesResponse, error) {
			return c.Addresses(ctx, &machine.AddressesRequest{})
		},
		func(node string, r *machine.AddressesResponse) []addressRow {
			var out []addressRow
			for _, a := range r.GetAddresses() {
				out = append(out, addressRow{Node: node, Link: a.GetLink(), Address: a.GetAddress(), Scope: a.GetScope(),
					Source: a.GetSource(), Dynamic: a.GetDynamic()})
			}
			return out
		},
		[]string{"NODE", "LINK", "ADDRESS", "SCOPE", "SOURCE", "DYNAMIC"},
		func(a addressRow) []string {
			return []string{a.Node, a.Link, a.Address, a.Scope, a.Source, yesNo(a.Dynamic)}
		})
}

// routeRow is one route as -o json|yaml prints it.
type routeRow struct {
	Node        string `json:"node" yaml:"node"`
	Link        string `json:"link" yaml:"link"`
	Destination string `json:"destination" yaml:"destination"`
	Gateway     string `json:"gateway,omitempty" yaml:"gateway,omitempty"`
	Source      string `json:"source,omitempty" yaml:"source,omitempty"`
	Metric      uint32 `json:"metric" yaml:"metric"`
	Protocol    string `json:"protocol" yaml:"protocol"`
	Scope       string `json:"scope" yaml:"scope"`
}

func newGetRoutesCommand(g *globals) *cobra.Command {
	return getView(g, "routes", "List the routes of each node (main table)",
		func(ctx context.Context, c *client.Client) (*machine.RoutesResponse, error) {
			return c.Routes(ctx, &machine.RoutesRequest{})
		},
		func(node string, r *machine.RoutesResponse) []routeRow {
			var out []routeRow
			for _, x := range r.GetRoutes() {
				out = append(out, routeRow{Node: node, Link: x.GetLink(), Destination: x.GetDestination(), Gateway: x.GetGateway(),
					Source: x.GetSource(), Metric: x.GetMetric(), Protocol: x.GetProtocol(), Scope: x.GetScope()})
			}
			return out
		},
		[]string{"NODE", "LINK", "DESTINATION", "GATEWAY", "SOURCE", "METRIC", "PROTOCOL", "SCOPE"},
		func(r routeRow) []string {
			return []string{r.Node, r.Link, r.Destination, r.Gateway, r.Source, strconv.Itoa(int(r.Metric)), r.Protocol, r.Scope}
		})
}

// resolversRow is the resolver configuration of one node.
type resolversRow struct {
	Node        string   `json:"node" yaml:"node"`
	Nameservers []string `json:"nameservers" yaml:"nameservers"`
	Search      []string `json:"search,omitempty" yaml:"search,omitempty"`
	Source      string   `json:"source,omitempty" yaml:"source,omitempty"`
}

func newGetResolversCommand(g *globals) *cobra.Command {
	return getView(g, "resolvers", "Show the DNS resolvers of each node and where they came from",
		func(ctx context.Context, c *client.Client) (*machine.ResolversResponse, error) {
			return c.Resolvers(ctx, &machine.ResolversRequest{})
		},
		func(node string, r *machine.ResolversResponse) []resolversRow {
			return []resolversRow{{Node: node, Nameservers: append([]string{}, r.GetNameservers()...), Search: r.GetSearch(), Source: r.GetSource()}}
		},
		[]string{"NODE", "NAMESERVERS", "SEARCH", "SOURCE"},
		func(r resolversRow) []string {
			return []string{r.Node, strings.Join(r.Nameservers, ","), strings.Join(r.Search, ","), r.Source}
		})
}

// hostnameRow is the host name of one node.
type hostnameRow struct {
	Node     string `json:"node" yaml:"node"`
	Hostname string `json:"hostname" yaml:"hostname"`
	Source   string `json:"source,omitempty" yaml:"source,omitempty"`
}

func newGetHostnameCommand(g *globals) *cobra.Command {
	return getView(g, "hostname", "Show the host name of each node and where it came from",
		func(ctx context.Context, c *client.Client) (*machine.HostnameResponse, error) {
			return c.Hostname(ctx, &machine.HostnameRequest{})
		},
		func(node string, r *machine.HostnameResponse) []hostnameRow {
			return []hostnameRow{{Node: node, Hostname: r.GetHostname(), Source: r.GetSource()}}
		},
		[]string{"NODE", "HOSTNAME", "SOURCE"},
		func(r hostnameRow) []string { return []string{r.Node, r.Hostname, r.Source} })
}

// timeRow is the time sync state of one node.
type timeRow struct {
	Node      string     `json:"node" yaml:"node"`
	Enabled   bool       `json:"enabled" yaml:"enabled"`
	Synced    bool       `json:"synced" yaml:"synced"`
	Servers   []string   `json:"servers,omitempty" yaml:"servers,omitempty"`
	Server    string     `json:"server,omitempty" yaml:"server,omitempty"`
	Offset    string     `json:"offset,omitempty" yaml:"offset,omitempty"`
	Delay     string     `json:"delay,omitempty" yaml:"delay,omitempty"`
	Stratum   uint32     `json:"stratum,omitempty" yaml:"stratum,omitempty"`
	LastSync  *time.Time `json:"lastSync,omitempty" yaml:"lastSync,omitempty"`
	LastError string     `json:"lastError,omitempty" yaml:"lastError,omitempty"`
	Steps     uint32     `json:"steps" yaml:"steps"`
	Slews     uint32     `json:"slews" yaml:"slews"`
}

func newGetTimeStatusCommand(g *globals) *cobra.Command {
	return getView(g, "timestatus", "Show the time synchronisation (NTP) state of each node",
		func(ctx context.Context, c *client.Client) (*machine.TimeStatusResponse, error) {
			return c.TimeStatus(ctx, &machine.TimeStatusRequest{})
		},
		func(node string, r *machine.TimeStatusResponse) []timeRow {
			row := timeRow{Node: node, Enabled: r.GetEnabled(), Synced: r.GetSynced(), Servers: r.GetServers(),
				Server: r.GetServer(), Stratum: r.GetStratum(), LastError: r.GetLastError(), Steps: r.GetSteps(), Slews: r.GetSlews()}
			if r.GetOffset() != nil {
				row.Offset = r.GetOffset().AsDuration().String()
				row.Delay = r.GetDelay().AsDuration().String()
			}
			if r.GetLastSync() != nil {
				ts := r.GetLastSync().AsTime()
				row.LastSync = &ts
			}
			return []timeRow{row}
		},
		[]string{"NODE", "ENABLED", "SYNCED", "SERVER", "OFFSET", "STRATUM", "LAST SYNC", "ERROR"},
		func(r timeRow) []string {
			last := ""
			if r.LastSync != nil {
				last = r.LastSync.UTC().Format(time.RFC3339)
			}
			stratum := ""
			if r.Stratum > 0 {
				stratum = strconv.Itoa(int(r.Stratum))
			}
			return []string{r.Node, yesNo(r.Enabled), yesNo(r.Synced), r.Server, r.Offset, stratum, last, r.LastError}
		})
}
