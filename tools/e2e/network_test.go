package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/tools/provision"
	"github.com/kiln-os/kiln/tools/qemu"
)

// QEMU's user network: the guest gets dhcpAddress by DHCP, the gateway is
// 10.0.2.2 and the DNS proxy 10.0.2.3. staticAddress is the one the test adds.
const (
	dhcpAddress   = provision.GuestAddress + "/24"
	staticIP      = "10.0.2.20"
	staticAddress = staticIP + "/24"
	userGateway   = "10.0.2.2"
	userDNS       = "10.0.2.3"

	// applyWait is hang protection for a live apply-config, far above its
	// 50 ms budget even under TCG.
	applyWait = time.Minute
)

// TestNetworkDHCPThenStaticLive boots a node (direct kernel boot) with a second
// forward from the host to 10.0.2.20:50000, gives it a config without network
// settings and checks that its address came from QEMU's DHCP server (kctl get
// addresses); then applies, with --mode no-reboot, the same cluster's config with a
// new host name and static addressing on that link (10.0.2.15/24 kept as a static
// address, 10.0.2.20/24 added, DHCP off, a default route via 10.0.2.2) and checks,
// without a reboot, that the API answers through 10.0.2.20, that both addresses are
// now the config's, and the host name, route and resolvers are the new ones.
func TestNetworkDHCPThenStaticLive(t *testing.T) {
	need(t)
	const dhcpHost, staticHost = "e2e-net-dhcp", "e2e-net-static"
	port, err := qemu.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	vm := startNetVM(t, "network", qemu.Forward{HostPort: port, GuestAddr: staticIP, GuestPort: qemu.APIPort})
	addr, staticAPI := vm.Addr(), fmt.Sprintf("127.0.0.1:%d", port)

	r := waitReady(t, vm)
	if r.mode != "maintenance" {
		t.Fatalf("readiness line mode = %q, want maintenance", r.mode)
	}
	cp, kc := genConfig(t, "e2e", dhcpHost)
	mustKctl(t, kc, "apply-config", "--insecure", "--cert-fingerprint", r.fingerprint, "-n", addr, "-f", cp)
	if v := waitConfigured(t, kc, addr); v.Hostname != dhcpHost {
		t.Errorf("hostname = %q, want %q", v.Hostname, dhcpHost)
	}

	// The config names no interface: the node took its address by DHCP.
	var nic string
	for _, a := range getAddresses(t, kc, addr) {
		if a.Address == dhcpAddress {
			nic = a.Link
			if a.Source != "dhcp" || !a.Dynamic {
				t.Errorf("%s on %s: source %q dynamic %v, want source dhcp with a lease lifetime", a.Address, a.Link, a.Source, a.Dynamic)
			}
		}
	}
	if nic == "" {
		t.Fatalf("no %s on the node; kctl get addresses:\n%s", dhcpAddress, mustKctl(t, kc, "-n", addr, "get", "addresses"))
	}
	if !hasDefaultRoute(t, kc, addr, "") {
		t.Errorf("no default route via %s after DHCP:\n%s", userGateway, mustKctl(t, kc, "-n", addr, "get", "routes"))
	}
	before := machinedPID(t, kc, addr)

	// The same cluster (same secrets, so the same client credentials) with static
	// addressing and another host name.
	dir := t.TempDir()
	patch := fmt.Sprintf(`[
	  {"op": "add", "path": "/machine/hostname", "value": %q},
	  {"op": "add", "path": "/machine/network", "value": {
	    "interfaces": [{"interface": %q, "addresses": [%q, %q],
	                    "routes": [{"network": "0.0.0.0/0", "gateway": %q}]}],
	    "nameservers": [%q]}}
	]`, staticHost, nic, dhcpAddress, staticAddress, userGateway, userDNS)
	mustKctl(t, kc, "gen", "config", "e2e", "https://"+provision.GuestAddress+":6443",
		"--with-secrets", filepath.Join(filepath.Dir(kc), "secrets.yaml"), "--output-dir", dir, "--config-patch", patch)
	// The answer travels over the connection to 10.0.2.15, which the static
	// config keeps: it must arrive. The checks below run either way.
	out, err := runKctlFor(t, applyWait, kc, "-n", addr, "apply-config", "--mode", "no-reboot", "-f", filepath.Join(dir, "controlplane.yaml"))
	if err != nil {
		t.Errorf("kctl apply-config --mode no-reboot: %v\n%s", err, out)
	} else {
		t.Logf("apply-config --mode no-reboot: %s", strings.TrimSpace(out))
	}

	// The API answers through the new address.
	if v := waitConfigured(t, kc, staticAPI); v.Hostname != staticHost {
		t.Errorf("hostname through %s = %q, want %q", staticIP, v.Hostname, staticHost)
	}
	got := map[string]addressRow{}
	for _, a := range getAddresses(t, kc, staticAPI) {
		if a.Link == nic {
			got[a.Address] = a
		}
	}
	for _, want := range []string{staticAddress, dhcpAddress} {
		a, ok := got[want]
		switch {
		case !ok:
			t.Errorf("%s lacks %s after the static config; its addresses: %v", nic, want, got)
		case a.Source != "config" || a.Dynamic:
			t.Errorf("%s on %s: source %q dynamic %v, want source config, no lifetime", want, nic, a.Source, a.Dynamic)
		}
	}
	if !hasDefaultRoute(t, kc, staticAPI, "kiln") {
		t.Errorf("no default route via %s from the config:\n%s", userGateway, mustKctl(t, kc, "-n", staticAPI, "get", "routes"))
	}
	var hn []struct {
		Hostname string `json:"hostname"`
		Source   string `json:"source"`
	}
	if err := json.Unmarshal([]byte(mustKctl(t, kc, "-n", staticAPI, "get", "hostname", "-o", "json")), &hn); err != nil || len(hn) != 1 {
		t.Fatalf("kctl get hostname -o json: %v %+v", err, hn)
	}
	if hn[0].Hostname != staticHost || hn[0].Source != "config" {
		t.Errorf("kctl get hostname = %+v, want %s from config", hn[0], staticHost)
	}
	var rs []struct {
		Nameservers []string `json:"nameservers"`
	}
	if err := json.Unmarshal([]byte(mustKctl(t, kc, "-n", staticAPI, "get", "resolvers", "-o", "json")), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("kctl get resolvers -o json: %v %+v", err, rs)
	}
	if strings.Join(rs[0].Nameservers, ",") != userDNS {
		t.Errorf("nameservers = %v, want [%s]", rs[0].Nameservers, userDNS)
	}
	// The address kept from DHCP still reaches the API as well.
	if v, err := kctlVersion(t, kc, addr); err != nil || v.Hostname != staticHost {
		t.Errorf("kctl version through %s: %+v, %v", provision.GuestAddress, v, err)
	}

	// No reboot: the same machined process, and one boot on the console.
	if after := machinedPID(t, kc, staticAPI); after != before {
		t.Errorf("machined PID %d before the apply, %d after: it restarted", before, after)
	}
	log, err := os.ReadFile(vm.SerialLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, banner := range []*regexp.Regexp{regexp.MustCompile(`Kiln \S+ \(init, kernel`), regexp.MustCompile(regexp.QuoteMeta(machinedBanner))} {
		if n := len(banner.FindAll(log, -1)); n != 1 {
			t.Errorf("the console shows %q %d times, want once (no reboot, no restart)", banner, n)
		}
	}
}

// startNetVM boots the image's kernel and initramfs directly with the API port
// forwarded as startVM does, plus forwards.
func startNetVM(t *testing.T, name string, forwards ...qemu.Forward) *qemu.VM {
	t.Helper()
	vm, err := qemu.Start(context.Background(), qemu.Config{
		Arch:     qemu.AMD64,
		Kernel:   env.kernel,
		Initrd:   env.initrd,
		Append:   env.cmdline,
		Disk:     env.raw,
		Forwards: forwards,
		Timeout:  vmLife,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			dst := filepath.Join(t.ArtifactDir(), "serial-"+name+".log")
			if err := vm.SaveLog(dst); err != nil {
				t.Logf("save serial log: %v", err)
			} else {
				t.Logf("serial log of %s kept at %s (go test -artifacts keeps it after the run)", name, dst)
			}
		}
		vm.Close()
	})
	return vm
}

// addressRow is one address of `kctl get addresses -o json`.
type addressRow struct {
	Link    string `json:"link"`
	Address string `json:"address"`
	Source  string `json:"source"`
	Dynamic bool   `json:"dynamic"`
}

func getAddresses(t *testing.T, kc, addr string) []addressRow {
	t.Helper()
	var rows []addressRow
	out := mustKctl(t, kc, "-n", addr, "get", "addresses", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("kctl get addresses -o json: %v\n%s", err, out)
	}
	return rows
}

// hasDefaultRoute reports whether the node has a default route via QEMU's gateway,
// installed by protocol (any when empty).
func hasDefaultRoute(t *testing.T, kc, addr, protocol string) bool {
	t.Helper()
	var rows []struct {
		Destination string `json:"destination"`
		Gateway     string `json:"gateway"`
		Protocol    string `json:"protocol"`
	}
	out := mustKctl(t, kc, "-n", addr, "get", "routes", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("kctl get routes -o json: %v\n%s", err, out)
	}
	for _, r := range rows {
		if r.Destination == "0.0.0.0/0" && r.Gateway == userGateway && (protocol == "" || r.Protocol == protocol) {
			return true
		}
	}
	return false
}

// machinedPID is the PID of the machined that init supervises, from the API.
func machinedPID(t *testing.T, kc, addr string) int32 {
	t.Helper()
	ps, err := adminClient(t, kc, addr).Processes(callCtx(t), &machine.ProcessesRequest{})
	if err != nil {
		t.Fatalf("Processes: %v", err)
	}
	for _, p := range ps.GetProcesses() {
		if p.GetPpid() == 1 && strings.Contains(p.GetCommandLine(), "machined") {
			return p.GetPid()
		}
	}
	t.Fatalf("no machined among the processes: %v", ps.GetProcesses())
	return 0
}
