package cmd

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/client"
	"github.com/kiln-os/kiln/machined/version"
)

// versionInfo is one side of `kctl version -o json|yaml`.
type versionInfo struct {
	Node        string `json:"node,omitempty" yaml:"node,omitempty"`
	Tag         string `json:"tag" yaml:"tag"`
	SHA         string `json:"sha" yaml:"sha"`
	GoVersion   string `json:"goVersion" yaml:"goVersion"`
	OS          string `json:"os" yaml:"os"`
	Arch        string `json:"arch" yaml:"arch"`
	Hostname    string `json:"hostname,omitempty" yaml:"hostname,omitempty"`
	Platform    string `json:"platform,omitempty" yaml:"platform,omitempty"`
	Maintenance *bool  `json:"maintenance,omitempty" yaml:"maintenance,omitempty"`
}

type versionOutput struct {
	Client  versionInfo   `json:"client" yaml:"client"`
	Servers []versionInfo `json:"servers,omitempty" yaml:"servers,omitempty"`
}

func newVersionCommand(g *globals) *cobra.Command {
	var clientOnly bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version of kctl and of each node",
		Args:  cobra.NoArgs,
	}
	format := outputFlag(c, formatTable, formatYAML, formatJSON)
	c.Flags().BoolVar(&clientOnly, "client", false, "print the client version only")
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		out := versionOutput{Client: versionInfo{
			Tag: version.Tag, SHA: version.SHA, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		}}
		var callErr error
		if !clientOnly {
			var res []result[*machine.VersionResponse]
			res, callErr = onEach(cmd.Context(), g, func(ctx context.Context, c *client.Client) (*machine.VersionResponse, error) {
				return c.Version(ctx, &machine.VersionRequest{})
			})
			for _, r := range res {
				v := r.Value.GetVersion()
				maint := r.Value.GetMaintenance()
				out.Servers = append(out.Servers, versionInfo{
					Node: r.Node, Tag: v.GetTag(), SHA: v.GetSha(), GoVersion: v.GetGoVersion(),
					OS: v.GetOs(), Arch: v.GetArch(), Hostname: r.Value.GetHostname(),
					Platform: r.Value.GetPlatform(), Maintenance: &maint,
				})
			}
		}
		if *format != formatTable {
			if err := encode(g.io.Out, *format, out); err != nil {
				return err
			}
			return callErr
		}
		w := g.io.Out
		fmt.Fprintln(w, "Client:")
		printVersion(w, out.Client)
		for _, s := range out.Servers {
			fmt.Fprintln(w, "Server:")
			printVersion(w, s)
		}
		return callErr
	}
	return c
}

func printVersion(w io.Writer, v versionInfo) {
	line := func(k, val string) {
		if val == "" {
			val = "-"
		}
		fmt.Fprintf(w, "\t%-13s%s\n", k+":", val)
	}
	if v.Node != "" {
		line("NODE", v.Node)
	}
	line("Tag", v.Tag)
	line("SHA", v.SHA)
	line("Go version", v.GoVersion)
	line("OS/Arch", v.OS+"/"+v.Arch)
	if v.Node != "" {
		line("Hostname", v.Hostname)
		line("Platform", v.Platform)
		line("Maintenance", yesNo(v.Maintenance != nil && *v.Maintenance))
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
