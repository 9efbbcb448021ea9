package patch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-os/kiln/machined/config"
)

func base(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("../testdata/valid/controlplane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name:  "merge scalars and maps",
			patch: "machine:\n  hostname: cp-9\n  sysctls:\n    vm.swappiness: \"10\"\n",
			check: func(t *testing.T, c *config.Config) {
				if c.Hostname() != "cp-9" {
					t.Errorf("hostname = %q", c.Hostname())
				}
				want := map[string]string{"net.ipv4.ip_forward": "1", "vm.swappiness": "10"}
				if diff := cmp.Diff(want, c.Machine.Machine.Sysctls); diff != "" {
					t.Errorf("sysctls (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:  "lists append",
			patch: "machine:\n  certSANs: [extra.example.com]\n  kernelArgs: [quiet]\n",
			check: func(t *testing.T, c *config.Config) {
				if got := c.Machine.Machine.KernelArgs; !slices.Equal(got, []string{"console=ttyS0", "quiet"}) {
					t.Errorf("kernelArgs = %q", got)
				}
				if got := c.Machine.Machine.CertSANs; len(got) != 3 {
					t.Errorf("certSANs = %q", got)
				}
			},
		},
		{
			name: "interfaces merge by name, vlans by id",
			patch: `machine:
  network:
    interfaces:
      - interface: eth0
        mtu: 9000
        addresses: ["10.0.1.2/24"]
        vlans:
          - vlanId: 10
            mtu: 1400
          - vlanId: 20
            dhcp: true
      - interface: eth1
        dhcp: true
`,
			check: func(t *testing.T, c *config.Config) {
				ifs := c.Machine.Machine.Network.Interfaces
				if len(ifs) != 3 {
					t.Fatalf("%d interfaces, want 3 (eth0, by MAC, eth1)", len(ifs))
				}
				eth0 := ifs[0]
				if eth0.MTU != 9000 || !eth0.DHCP || len(eth0.Addresses) != 3 {
					t.Errorf("eth0 = %+v", eth0)
				}
				if len(eth0.VLANs) != 2 || eth0.VLANs[0].MTU != 1400 || len(eth0.VLANs[0].Addresses) != 1 || eth0.VLANs[1].VLANID != 20 {
					t.Errorf("vlans = %+v", eth0.VLANs)
				}
				if ifs[2].Interface != "eth1" {
					t.Errorf("third interface = %+v", ifs[2])
				}
			},
		},
		{
			name:  "interfaces merge by MAC",
			patch: "machine:\n  network:\n    interfaces:\n      - deviceSelector: {hardwareAddr: \"52:54:00:12:34:56\"}\n        mtu: 1450\n",
			check: func(t *testing.T, c *config.Config) {
				ifs := c.Machine.Machine.Network.Interfaces
				if len(ifs) != 2 || ifs[1].MTU != 1450 {
					t.Errorf("interfaces = %+v", ifs)
				}
			},
		},
		{
			name:  "service by kind and name",
			patch: "apiVersion: kiln.dev/v1alpha1\nkind: ServiceConfig\nname: web\nargs: [--verbose]\nenvironment: {A: b}\n---\napiVersion: kiln.dev/v1alpha1\nkind: ServiceConfig\nname: cache\ncommand: /usr/bin/cache\n",
			check: func(t *testing.T, c *config.Config) {
				web := c.Service("web")
				if !slices.Equal(web.Args, []string{"--port", "8080", "--verbose"}) || web.Environment["A"] != "b" || web.Environment["LOG_LEVEL"] != "debug" {
					t.Errorf("web = %+v", web)
				}
				if c.Service("cache") == nil || len(c.Services) != 3 {
					t.Errorf("cache service not added: %d services", len(c.Services))
				}
			},
		},
		{
			name:  "JSON patch as YAML",
			patch: "- op: replace\n  path: /machine/hostname\n  value: cp-7\n- op: remove\n  path: /machine/kernelArgs\n- op: add\n  path: /cluster/allowSchedulingOnControlPlanes\n  value: true\n",
			check: func(t *testing.T, c *config.Config) {
				if c.Hostname() != "cp-7" || c.Machine.Machine.KernelArgs != nil || !c.Machine.Cluster.AllowSchedulingOnControlPlanes {
					t.Errorf("machine = %+v", c.Machine.Machine)
				}
				if c.Machine.Machine.Files[0].Permissions != 0o644 {
					t.Errorf("permissions lost in JSON: %v", c.Machine.Machine.Files[0].Permissions)
				}
				if len(c.Services) != 2 {
					t.Errorf("services lost: %d", len(c.Services))
				}
			},
		},
		{
			name:  "JSON patch as JSON",
			patch: `[{"op": "add", "path": "/machine/network/nameservers/-", "value": "8.8.8.8"}]`,
			check: func(t *testing.T, c *config.Config) {
				if got := c.Machine.Machine.Network.Nameservers; !slices.Equal(got, []string{"1.1.1.1", "8.8.8.8"}) {
					t.Errorf("nameservers = %q", got)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load(tc.patch)
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			out, err := Apply(base(t), p)
			if err != nil {
				t.Fatalf("Apply = %v", err)
			}
			c, err := config.Parse(out)
			if err != nil {
				t.Fatalf("Parse(Apply()) = %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte("cluster:\n  proxy:\n    mode: disabled\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load("@" + path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Apply(base(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "mode: disabled") {
		t.Errorf("patch from file not applied:\n%s", out)
	}
	if _, err := Load("@" + filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestApplyErrors(t *testing.T) {
	for _, tc := range []struct{ name, patch, want string }{
		{"result invalid", "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        mtu: 1\n", "machine.network.interfaces[0].mtu"},
		{"JSON patch fails", `[{"op": "remove", "path": "/machine/nosuch"}]`, "JSON patch"},
		{"unknown kind", "kind: Bogus\n", "unknown kind"},
		{"service without name", "kind: ServiceConfig\n", "needs a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load(tc.patch)
			if err == nil {
				_, err = Apply(base(t), p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "just a string", "[1, 2]"} {
		if _, err := Load(bad); err == nil {
			t.Errorf("Load(%q) succeeded", bad)
		}
	}
}
