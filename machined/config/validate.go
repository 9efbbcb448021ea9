package config

import (
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// validate checks the decoded (and defaulted) config and records every
// problem in p.
func validate(c *Config, p *problems, machine bool) {
	v := &validator{p: p, cp: c.Machine.Machine.Type == TypeControlPlane}
	if machine {
		v.document(c.Machine.APIVersion, "")
		v.machine(&c.Machine.Machine)
		v.cluster(&c.Machine.Cluster)
	}
	v.services(c.Services)
}

type validator struct {
	p  *problems
	cp bool
}

func (v *validator) add(path, format string, args ...any) { v.p.add(path, format, args...) }

func (v *validator) document(apiVersion, prefix string) {
	switch apiVersion {
	case APIVersion:
	case "":
		v.add(join(prefix, "apiVersion"), "required: %s", APIVersion)
	default:
		v.add(join(prefix, "apiVersion"), "unsupported apiVersion %q; want %s", apiVersion, APIVersion)
	}
}

func (v *validator) machine(m *MachineSpec) {
	switch m.Type {
	case TypeControlPlane, TypeWorker:
	case "":
		v.add("machine.type", "required: controlplane or worker")
	default:
		v.add("machine.type", "unknown machine type %q; want controlplane or worker", m.Type)
	}
	if m.Hostname != "" && !isHostname(m.Hostname) {
		v.add("machine.hostname", "%q is not a valid host name (lowercase letters, digits, '-' and '.', as in RFC 1123)", m.Hostname)
	}
	if m.Token == "" {
		v.add("machine.token", "required: the machine join token")
	} else if strings.ContainsAny(m.Token, " \t\r\n") {
		v.add("machine.token", "must not contain white space")
	}
	v.ca("machine.ca", m.CA, true, v.cp)
	for i, s := range m.CertSANs {
		if _, ok := parseIP(s); !ok && !isDNSName(s) {
			v.add(index("machine.certSANs", i), "%q is neither an IP address nor a DNS name", s)
		}
	}
	if d := m.Install.Disk; d != "" && (!strings.HasPrefix(d, "/dev/") || !isCleanAbs(d)) {
		v.add("machine.install.disk", "%q is not a device path such as /dev/vda", d)
	}
	if m.Install.Wipe && m.Install.Disk == "" {
		v.add("machine.install.wipe", "needs machine.install.disk")
	}
	v.network(&m.Network)
	for i, s := range m.Time.Servers {
		if _, ok := parseIP(s); !ok && !isDNSName(s) {
			v.add(index("machine.time.servers", i), "%q is neither an IP address nor a host name", s)
		}
	}
	v.kubelet(&m.Kubelet)
	for _, k := range sortedKeys(m.Sysctls) {
		if !sysctlRe.MatchString(k) {
			v.add(mapPath("machine.sysctls", k), "%q is not a sysctl name such as net.ipv4.ip_forward", k)
		}
	}
	v.files(m.Files)
	for i, a := range m.KernelArgs {
		if a == "" || strings.ContainsAny(a, " \t\r\n") {
			v.add(index("machine.kernelArgs", i), "%q must be one non-empty argument without white space", a)
		}
	}
}

// ca checks a CA: crt must be a CA certificate, key must match it.
func (v *validator) ca(path string, ck CertAndKey, crtRequired, keyRequired bool) {
	crtPath, keyPath := join(path, "crt"), join(path, "key")
	if ck.Crt == "" {
		if crtRequired || ck.Key != "" {
			v.add(crtPath, "required: base64 of the PEM CA certificate")
		}
	}
	if ck.Key == "" && keyRequired {
		v.add(keyPath, "required on controlplane nodes: base64 of the PEM CA private key")
	}
	var cert *x509.Certificate
	if ck.Crt != "" {
		c, err := ParseCertificate(ck.Crt)
		switch {
		case err != nil:
			v.add(crtPath, "%v", err)
		case !c.IsCA || !c.BasicConstraintsValid:
			v.add(crtPath, "is not a CA certificate (basic constraints CA:TRUE missing)")
		default:
			cert = c
		}
	}
	if ck.Key != "" {
		key, err := ParsePrivateKey(ck.Key)
		switch {
		case err != nil:
			v.add(keyPath, "%v", err)
		case cert != nil && !keyMatches(key, cert):
			v.add(keyPath, "does not match %s", crtPath)
		}
	}
}

func (v *validator) network(n *NetworkConfig) {
	names := make(map[string]int)
	macs := make(map[string]int)
	members := make(map[string]int) // bond member → index of its bond
	for i := range n.Interfaces {
		ifc := &n.Interfaces[i]
		path := index("machine.network.interfaces", i)
		hasName, hasSel := ifc.Interface != "", ifc.DeviceSelector != nil
		switch {
		case hasName && hasSel:
			v.add(path, "set either interface or deviceSelector, not both")
		case !hasName && !hasSel:
			v.add(path, "set one of interface (a name such as eth0) or deviceSelector")
		}
		if hasName {
			p := join(path, "interface")
			if !isInterfaceName(ifc.Interface) {
				v.add(p, "%q is not a valid interface name", ifc.Interface)
			} else if j, dup := names[ifc.Interface]; dup {
				v.add(p, "interface %q is already configured by machine.network.interfaces[%d]", ifc.Interface, j)
			} else {
				names[ifc.Interface] = i
			}
		}
		if hasSel {
			v.deviceSelector(path, ifc.DeviceSelector, macs, i)
		}
		if ifc.Bond != nil {
			v.bond(path, ifc, members, i)
		}
		if ifc.Down && (ifc.DHCP || ifc.DHCP6 || len(ifc.Addresses) > 0 || len(ifc.Routes) > 0 || len(ifc.VLANs) > 0) {
			v.add(join(path, "down"), "a down interface gets no dhcp, dhcp6, addresses, routes or vlans; remove them or down")
		}
		v.addresses(path, ifc.Addresses, ifc.Routes, ifc.MTU)
		ids := make(map[int]int)
		for k := range ifc.VLANs {
			vl := &ifc.VLANs[k]
			vp := index(join(path, "vlans"), k)
			if vl.VLANID < 1 || vl.VLANID > 4094 {
				v.add(join(vp, "vlanId"), "%d is out of range 1..4094", vl.VLANID)
			} else if j, dup := ids[vl.VLANID]; dup {
				v.add(join(vp, "vlanId"), "VLAN %d is already configured by vlans[%d]", vl.VLANID, j)
			} else {
				ids[vl.VLANID] = k
			}
			v.addresses(vp, vl.Addresses, vl.Routes, vl.MTU)
			if ifc.MTU != 0 && vl.MTU > ifc.MTU {
				v.add(join(vp, "mtu"), "%d is larger than the MTU %d of its parent interface", vl.MTU, ifc.MTU)
			}
		}
	}
	// Members of bonds: they exist as entries only to be enslaved.
	for i := range n.Interfaces {
		ifc := &n.Interfaces[i]
		b, ok := members[ifc.Interface]
		if !ok || ifc.Interface == "" {
			continue
		}
		path := index("machine.network.interfaces", i)
		if len(ifc.VLANs) > 0 {
			v.add(join(path, "vlans"), "parent %q is a member of bond %q (machine.network.interfaces[%d]), not a usable parent: put the VLANs on the bond",
				ifc.Interface, n.Interfaces[b].Interface, b)
		}
		if ifc.DHCP || ifc.DHCP6 || len(ifc.Addresses) > 0 || len(ifc.Routes) > 0 {
			v.add(path, "%q is a member of bond %q (machine.network.interfaces[%d]); configure dhcp, dhcp6, addresses and routes on the bond", ifc.Interface, n.Interfaces[b].Interface, b)
		}
		if ifc.Bond != nil {
			v.add(join(path, "bond"), "bond %q cannot be a member of bond %q", ifc.Interface, n.Interfaces[b].Interface)
		}
	}
	v.duplicateAddresses(n)
	v.gateways(n)
	for i, s := range n.Nameservers {
		if _, ok := parseIP(s); !ok {
			v.add(index("machine.network.nameservers", i), "%q is not an IP address", s)
		}
	}
	for i, h := range n.ExtraHosts {
		path := index("machine.network.extraHosts", i)
		if _, ok := parseIP(h.IP); !ok {
			v.add(join(path, "ip"), "%q is not an IP address", h.IP)
		}
		if len(h.Aliases) == 0 {
			v.add(join(path, "aliases"), "required: at least one host name")
		}
		for k, a := range h.Aliases {
			if !isDNSName(a) {
				v.add(index(join(path, "aliases"), k), "%q is not a valid host name", a)
			}
		}
	}
}

func (v *validator) deviceSelector(path string, sel *DeviceSelector, macs map[string]int, i int) {
	if sel.HardwareAddr == "" && sel.Driver == "" {
		v.add(join(path, "deviceSelector.hardwareAddr"), "required: a MAC address such as 52:54:00:12:34:56 (or a driver)")
		return
	}
	if sel.Driver != "" && (len(sel.Driver) > 32 || strings.ContainsAny(sel.Driver, "/ \t\n\x00")) {
		v.add(join(path, "deviceSelector.driver"), "%q is not a kernel driver name such as virtio_net", sel.Driver)
	}
	if sel.HardwareAddr == "" {
		return
	}
	p := join(path, "deviceSelector.hardwareAddr")
	hw, ok := parseMAC(sel.HardwareAddr)
	if !ok {
		v.add(p, "%q is not a MAC address such as 52:54:00:12:34:56", sel.HardwareAddr)
		return
	}
	if j, dup := macs[hw.String()]; dup {
		v.add(p, "hardware address %s is already selected by machine.network.interfaces[%d]", hw, j)
	} else {
		macs[hw.String()] = i
	}
}

func (v *validator) bond(path string, ifc *InterfaceConfig, members map[string]int, i int) {
	bp := join(path, "bond")
	if ifc.Interface == "" {
		v.add(join(path, "interface"), "required: a bond is named by interface (e.g. bond0), not selected by deviceSelector")
	}
	if ifc.Bond.Mode != BondActiveBackup && ifc.Bond.Mode != Bond8023AD {
		v.add(join(bp, "mode"), "%q is not a bond mode: use %s or %s", ifc.Bond.Mode, BondActiveBackup, Bond8023AD)
	}
	if len(ifc.Bond.Interfaces) == 0 {
		v.add(join(bp, "interfaces"), "required: a bond needs at least one member interface")
	}
	for k, m := range ifc.Bond.Interfaces {
		mp := index(join(bp, "interfaces"), k)
		switch j, dup := members[m]; {
		case !isInterfaceName(m):
			v.add(mp, "%q is not a valid interface name", m)
		case m == ifc.Interface:
			v.add(mp, "a bond cannot be its own member")
		case dup && j == i:
			v.add(mp, "%q is listed twice", m)
		case dup:
			v.add(mp, "%q is already a member of the bond of machine.network.interfaces[%d]", m, j)
		default:
			members[m] = i
		}
	}
}

// duplicateAddresses reports an IP address configured twice, on one link or
// on two.
func (v *validator) duplicateAddresses(n *NetworkConfig) {
	seen := map[netip.Addr]string{}
	check := func(path string, addrs []string) {
		for k, a := range addrs {
			p, ok := parseCIDR(a)
			if !ok {
				continue
			}
			ap := index(join(path, "addresses"), k)
			if first, dup := seen[p.Addr()]; dup {
				v.add(ap, "%s is already configured at %s", p.Addr(), first)
				continue
			}
			seen[p.Addr()] = ap
		}
	}
	for i := range n.Interfaces {
		ifc := &n.Interfaces[i]
		path := index("machine.network.interfaces", i)
		check(path, ifc.Addresses)
		for k := range ifc.VLANs {
			check(index(join(path, "vlans"), k), ifc.VLANs[k].Addresses)
		}
	}
}

// gateways reports a route whose gateway no configured link can reach: not
// on the subnet of any static address, not IPv6 link-local, and (for IPv4)
// no link of its family takes an address by DHCP (or, for IPv6, from Router
// Advertisements), which might supply the subnet.
func (v *validator) gateways(n *NetworkConfig) {
	var subnets []netip.Prefix
	dhcp, dhcp6 := false, false
	for i := range n.Interfaces {
		ifc := &n.Interfaces[i]
		dhcp = dhcp || ifc.DHCP
		dhcp6 = dhcp6 || ifc.DHCP6
		for _, a := range ifc.Addresses {
			if p, ok := parseCIDR(a); ok {
				subnets = append(subnets, p.Masked())
			}
		}
		for _, vl := range ifc.VLANs {
			dhcp = dhcp || vl.DHCP
			dhcp6 = dhcp6 || vl.DHCP6
			for _, a := range vl.Addresses {
				if p, ok := parseCIDR(a); ok {
					subnets = append(subnets, p.Masked())
				}
			}
		}
	}
	check := func(path string, routes []Route) {
		for k, r := range routes {
			gw, ok := parseIP(r.Gateway)
			dst, dok := parseCIDR(r.Network)
			if !ok || !dok || gw.Is4() != dst.Addr().Is4() {
				continue // reported already
			}
			if gw.IsLinkLocalUnicast() || (gw.Is4() && dhcp) || (gw.Is6() && dhcp6) {
				continue
			}
			if slices.ContainsFunc(subnets, func(p netip.Prefix) bool { return p.Contains(gw) }) {
				continue
			}
			v.add(join(index(join(path, "routes"), k), "gateway"), "%s is not reachable: no configured address is on its subnet; add one, or use dhcp", gw)
		}
	}
	for i := range n.Interfaces {
		ifc := &n.Interfaces[i]
		path := index("machine.network.interfaces", i)
		check(path, ifc.Routes)
		for k := range ifc.VLANs {
			check(index(join(path, "vlans"), k), ifc.VLANs[k].Routes)
		}
	}
}

// addresses checks the addresses, routes and MTU of an interface or VLAN.
func (v *validator) addresses(path string, addrs []string, routes []Route, mtu int) {
	v6 := false
	for i, a := range addrs {
		p, ok := parseCIDR(a)
		if !ok {
			v.add(index(join(path, "addresses"), i), "%q is not a valid CIDR", a)
		}
		v6 = v6 || (ok && p.Addr().Is6())
	}
	for i, r := range routes {
		rp := index(join(path, "routes"), i)
		dst, ok := parseCIDR(r.Network)
		switch {
		case r.Network == "":
			v.add(join(rp, "network"), "required: the destination, e.g. 0.0.0.0/0")
		case !ok:
			v.add(join(rp, "network"), "%q is not a valid CIDR", r.Network)
		}
		for _, f := range []struct{ key, val string }{{"gateway", r.Gateway}, {"source", r.Source}} {
			if f.val == "" {
				continue
			}
			a, aok := parseIP(f.val)
			switch {
			case !aok:
				v.add(join(rp, f.key), "%q is not an IP address", f.val)
			case ok && a.Is4() != dst.Addr().Is4():
				v.add(join(rp, f.key), "%s is not of the same IP family as network %s", f.val, r.Network)
			}
		}
	}
	switch {
	case mtu != 0 && (mtu < 68 || mtu > 65535):
		v.add(join(path, "mtu"), "%d is out of range 68..65535", mtu)
	case mtu != 0 && mtu < 1280 && v6:
		v.add(join(path, "mtu"), "%d is below 1280, the least IPv6 needs, and the interface has IPv6 addresses", mtu)
	}
}

var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

func (v *validator) kubelet(k *KubeletConfig) {
	for _, key := range sortedKeys(k.ExtraArgs) {
		if strings.HasPrefix(key, "-") || !flagNameRe.MatchString(key) {
			v.add(mapPath("machine.kubelet.extraArgs", key), "%q is not a flag name; write it without leading dashes", key)
		}
	}
	for _, key := range sortedKeys(k.NodeLabels) {
		p := mapPath("machine.kubelet.nodeLabels", key)
		if !isQualifiedName(key) {
			v.add(p, "%q is not a valid label key", key)
		} else if val := k.NodeLabels[key]; len(val) > 63 || !labelValueRe.MatchString(val) {
			v.add(p, "%q is not a valid label value", val)
		}
	}
	for _, key := range sortedKeys(k.NodeTaints) {
		p := mapPath("machine.kubelet.nodeTaints", key)
		if !isQualifiedName(key) {
			v.add(p, "%q is not a valid taint key", key)
			continue
		}
		val := k.NodeTaints[key]
		value, effect, found := strings.Cut(val, ":")
		if !found {
			value, effect = "", val
		}
		if !slices.Contains(taintEffects, effect) {
			v.add(p, "%q must be value:Effect with Effect one of %s", val, strings.Join(taintEffects, ", "))
		} else if len(value) > 63 || !labelValueRe.MatchString(value) {
			v.add(p, "%q is not a valid taint value", value)
		}
	}
	for i, s := range k.NodeIP.ValidSubnets {
		if _, ok := parseCIDR(s); !ok {
			v.add(index("machine.kubelet.nodeIP.validSubnets", i), "%q is not a valid CIDR", s)
		}
	}
}

// isQualifiedName checks a Kubernetes label or taint key: [prefix/]name.
func isQualifiedName(s string) bool {
	prefix, name, found := strings.Cut(s, "/")
	if !found {
		name, prefix = prefix, ""
	} else if !isHostname(prefix) {
		return false
	}
	return len(name) <= 63 && labelNameRe.MatchString(name)
}

func (v *validator) files(files []FileConfig) {
	for i, f := range files {
		path := index("machine.files", i)
		switch {
		case f.Path == "":
			v.add(join(path, "path"), "required: an absolute path under /var or /etc")
		case !isCleanAbs(f.Path) || !(strings.HasPrefix(f.Path, "/var/") || strings.HasPrefix(f.Path, "/etc/")):
			v.add(join(path, "path"), "%q must be a clean absolute path under /var or /etc (the rest of the root file system is read-only)", f.Path)
		}
		switch f.Op {
		case FileOpCreate, FileOpAppend, FileOpOverwrite:
		default:
			v.add(join(path, "op"), "unknown op %q; want create, append or overwrite", f.Op)
		}
		if f.Permissions > 0o7777 {
			v.add(join(path, "permissions"), "%s is not a valid file mode", f.Permissions)
		}
	}
}

func (v *validator) cluster(c *ClusterSpec) {
	switch {
	case c.Name == "":
		v.add("cluster.name", "required")
	case !isDNSLabel(c.Name):
		v.add("cluster.name", "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", c.Name)
	}
	if c.ControlPlane.Endpoint == "" {
		v.add("cluster.controlPlane.endpoint", "required: the Kubernetes API URL, e.g. https://10.0.0.2:6443")
	} else if msg := checkEndpoint(c.ControlPlane.Endpoint); msg != "" {
		v.add("cluster.controlPlane.endpoint", "%s", msg)
	}
	v.subnets(&c.Network)
	if c.Network.DNSDomain != "" && !isDNSName(c.Network.DNSDomain) {
		v.add("cluster.network.dnsDomain", "%q is not a DNS domain", c.Network.DNSDomain)
	}
	switch c.Proxy.Mode {
	case ProxyModeEBPF, ProxyModeDisabled:
	default:
		v.add("cluster.proxy.mode", "unknown mode %q; want ebpf or disabled", c.Proxy.Mode)
	}
	v.ca("cluster.ca", c.CA, true, v.cp)
	v.ca("cluster.etcd.ca", c.Etcd.CA, v.cp, v.cp)
	v.ca("cluster.aggregatorCA", c.AggregatorCA, v.cp, v.cp)
	if c.ServiceAccount.Key == "" {
		if v.cp {
			v.add("cluster.serviceAccount.key", "required on controlplane nodes: base64 of a PEM private key")
		}
	} else if _, err := ParsePrivateKey(c.ServiceAccount.Key); err != nil {
		v.add("cluster.serviceAccount.key", "%v", err)
	}
	switch {
	case c.Token == "":
		v.add("cluster.token", "required: a bootstrap token like abcdef.0123456789abcdef")
	case !bootstrapTokenRe.MatchString(c.Token):
		v.add("cluster.token", "must look like abcdef.0123456789abcdef ([a-z0-9]{6}.[a-z0-9]{16})")
	}
	if s := c.SecretboxEncryptionSecret; s == "" {
		if v.cp {
			v.add("cluster.secretboxEncryptionSecret", "required on controlplane nodes: base64 of 32 random bytes")
		}
	} else if raw, err := base64.StdEncoding.DecodeString(s); err != nil || len(raw) != 32 {
		v.add("cluster.secretboxEncryptionSecret", "must be base64 of exactly 32 bytes")
	}
}

func (v *validator) subnets(n *ClusterNetworkConfig) {
	type subnet struct {
		path string
		p    netip.Prefix
	}
	var all []subnet
	for _, list := range []struct {
		key  string
		vals []string
	}{{"podSubnets", n.PodSubnets}, {"serviceSubnets", n.ServiceSubnets}} {
		var v4, v6 int
		for i, s := range list.vals {
			path := index("cluster.network."+list.key, i)
			p, ok := parseCIDR(s)
			if !ok {
				v.add(path, "%q is not a valid CIDR", s)
				continue
			}
			if p.Masked() != p {
				v.add(path, "%q has host bits set; did you mean %s?", s, p.Masked())
				continue
			}
			if p.Addr().Is4() {
				v4++
			} else {
				v6++
			}
			if v4 > 1 || v6 > 1 {
				v.add(path, "at most one subnet per IP family")
				continue
			}
			for _, o := range all {
				if o.p.Overlaps(p) {
					v.add(path, "%s overlaps %s (%s)", s, strings.TrimPrefix(o.path, "cluster.network."), o.p)
				}
			}
			all = append(all, subnet{path, p})
		}
	}
}

func (v *validator) services(services []*ServiceConfig) {
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = s.Name
	}
	prefixes := servicePrefixes(names)
	byName := make(map[string]int)
	for i, s := range services {
		if _, dup := byName[s.Name]; !dup && s.Name != "" {
			byName[s.Name] = i
		}
	}
	for i, s := range services {
		pre := prefixes[i]
		v.document(s.APIVersion, pre)
		switch {
		case s.Name == "":
			v.add(join(pre, "name"), "required: a DNS label")
		case !isDNSLabel(s.Name):
			v.add(join(pre, "name"), "%q is not a DNS label (lowercase letters, digits and '-', at most 63)", s.Name)
		case slices.Contains(ReservedServiceNames, s.Name):
			v.add(join(pre, "name"), "%q is the name of a Kiln service", s.Name)
		case byName[s.Name] != i:
			v.add(join(pre, "name"), "duplicate service name %q (also %s)", s.Name, prefixes[byName[s.Name]])
		}
		switch {
		case s.Command == "":
			v.add(join(pre, "command"), "required: the absolute path of the program")
		case !isCleanAbs(s.Command):
			v.add(join(pre, "command"), "%q must be a clean absolute path", s.Command)
		}
		for _, k := range sortedKeys(s.Environment) {
			if !envNameRe.MatchString(k) {
				v.add(mapPath(join(pre, "environment"), k), "%q is not a valid environment variable name", k)
			}
		}
		for k, dep := range s.DependsOn {
			_, known := byName[dep]
			if !known && !slices.Contains(ReservedServiceNames, dep) {
				v.add(index(join(pre, "dependsOn"), k), "unknown service %q", dep)
			}
		}
		switch s.Restart {
		case RestartAlways, RestartOnFailure, RestartNever:
		default:
			v.add(join(pre, "restart"), "unknown restart policy %q; want always, on-failure or never", s.Restart)
		}
		if h := s.HealthCheck; h != nil {
			v.healthCheck(join(pre, "healthCheck"), h)
		}
	}
	v.cycles(services, prefixes, byName)
}

func (v *validator) healthCheck(path string, h *HealthCheck) {
	switch {
	case h.TCP == "" && len(h.Exec) == 0:
		v.add(path, "set one of tcp or exec")
	case h.TCP != "" && len(h.Exec) > 0:
		v.add(path, "set either tcp or exec, not both")
	}
	if h.TCP != "" {
		host, port, err := net.SplitHostPort(h.TCP)
		n, perr := strconv.Atoi(port)
		_, isIP := parseIP(host)
		if err != nil || perr != nil || n < 1 || n > 65535 || (!isIP && !isDNSName(host)) {
			v.add(join(path, "tcp"), "%q is not host:port", h.TCP)
		}
	}
	if len(h.Exec) > 0 && !isCleanAbs(h.Exec[0]) {
		v.add(index(join(path, "exec"), 0), "%q must be a clean absolute path", h.Exec[0])
	}
	if h.Interval <= 0 {
		v.add(join(path, "interval"), "must be positive")
	}
	if h.Timeout <= 0 {
		v.add(join(path, "timeout"), "must be positive")
	} else if h.Interval > 0 && h.Timeout > h.Interval {
		v.add(join(path, "timeout"), "%s is longer than interval %s", h.Timeout, h.Interval)
	}
}

// cycles reports each dependency cycle once, at the dependsOn of the
// service (in document order) where it was entered.
func (v *validator) cycles(services []*ServiceConfig, prefixes []string, byName map[string]int) {
	const (
		unvisited = iota
		active
		done
	)
	state := make([]int, len(services))
	var stack []int
	var visit func(i int)
	visit = func(i int) {
		state[i] = active
		stack = append(stack, i)
		for _, dep := range services[i].DependsOn {
			j, ok := byName[dep]
			if !ok {
				continue
			}
			switch state[j] {
			case unvisited:
				visit(j)
			case active:
				start := slices.Index(stack, j)
				var chain []string
				for _, k := range stack[start:] {
					chain = append(chain, services[k].Name)
				}
				chain = append(chain, services[j].Name)
				v.add(join(prefixes[j], "dependsOn"), "dependency cycle: %s", strings.Join(chain, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
	}
	for i := range services {
		if state[i] == unvisited && byName[services[i].Name] == i {
			visit(i)
		}
	}
}

// sortedKeys returns a map's keys in order, so problems come out
// deterministically.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
