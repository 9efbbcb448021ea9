//go:build linux

package serviceproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ExternalLink is a node link on which NodePorts, externalIPs and LoadBalancer IPs
// are served: TCX ingress and egress programs are attached to it. Every link a
// client's packets or a remote backend's replies can come in on must be listed (the
// node's uplinks; with VXLAN between nodes, the VXLAN device too).
type ExternalLink struct {
	// Name is the interface name.
	Name string
	// Addrs are the node's addresses on the link. NodePorts answer on the
	// addresses of every external link, and the first IPv4 address and the
	// first global unicast IPv6 address are the sources that connections of
	// their family coming in on this link are SNATed to (without one, such
	// connections to remote backends under the Cluster policy are dropped).
	// Empty takes the link's addresses of global scope at the time of the
	// call.
	Addrs []netip.Addr
}

// tcxPinPrefix starts the pin names of TCX links: tcx_<ingress|egress>_<ifname>.
const tcxPinPrefix = "tcx_"

// SetExternalLinks makes links the set of external links: programs are attached
// to new ones (in place with link.Update where a pinned link exists already),
// detached from links no longer listed, and the node addresses and SNAT sources
// are rewritten.
func (p *Proxy) SetExternalLinks(links []ExternalLink) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.setExternalLinks(links)
}

// linkConf is an external link resolved against the kernel.
type linkConf struct {
	name    string
	ifindex uint32
	addrs   []netip.Addr
	snat4   netip.Addr
	snat6   netip.Addr
}

func resolveLinks(links []ExternalLink) ([]linkConf, error) {
	var out []linkConf
	seen := map[string]bool{}
	for _, l := range links {
		if seen[l.Name] {
			return nil, fmt.Errorf("external link %q listed twice", l.Name)
		}
		seen[l.Name] = true
		nl, err := netlink.LinkByName(l.Name)
		if err != nil {
			return nil, fmt.Errorf("external link %q: %w", l.Name, err)
		}
		c := linkConf{name: l.Name, ifindex: uint32(nl.Attrs().Index), addrs: l.Addrs}
		if len(c.addrs) == 0 {
			as, err := netlink.AddrList(nl, netlink.FAMILY_ALL)
			if err != nil {
				return nil, fmt.Errorf("external link %q: list addresses: %w", l.Name, err)
			}
			for _, a := range as {
				if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == unix.RT_SCOPE_UNIVERSE {
					c.addrs = append(c.addrs, ip.Unmap())
				}
			}
		}
		for i, a := range c.addrs {
			a = a.Unmap()
			if !a.IsValid() || a.IsUnspecified() || a.Zone() != "" {
				return nil, fmt.Errorf("external link %q: %s is not a node address", l.Name, a)
			}
			c.addrs[i] = a
			switch {
			case a.Is4() && !c.snat4.IsValid():
				c.snat4 = a
			case a.Is6() && a.IsGlobalUnicast() && !c.snat6.IsValid():
				c.snat6 = a
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func (p *Proxy) setExternalLinks(links []ExternalLink) error {
	confs, err := resolveLinks(links)
	if err != nil {
		return err
	}
	// Configuration first, so that programs attached below find it.
	wantLinks := map[uint32]tcLinkCfg{}
	wantAddrs := map[tcNodeAddr]uint32{}
	for _, c := range confs {
		v := tcLinkCfg{}
		if c.snat4.IsValid() {
			v.Snat4 = addrWords(c.snat4)[3]
		}
		if c.snat6.IsValid() {
			v.Snat6 = addrWords(c.snat6)
		}
		wantLinks[c.ifindex] = v
		for _, a := range c.addrs {
			wantAddrs[tcNodeAddr{Addr: addrWords(a)}] = c.ifindex
		}
	}
	if err := putAll(p.tcObjs.KilnLinks, wantLinks); err != nil {
		return err
	}
	if err := putAll(p.tcObjs.KilnNodeAddrs, wantAddrs); err != nil {
		return err
	}

	want := map[string]bool{}
	for _, c := range confs {
		for _, dir := range []struct {
			name   string
			attach ebpf.AttachType
			prog   *ebpf.Program
		}{
			{"ingress", ebpf.AttachTCXIngress, p.tcObjs.KilnTcIngress},
			{"egress", ebpf.AttachTCXEgress, p.tcObjs.KilnTcEgress},
		} {
			pin := tcxPinPrefix + dir.name + "_" + c.name
			want[pin] = true
			if p.tcLinks[pin] != nil {
				if err := p.tcLinks[pin].Update(dir.prog); err != nil {
					return fmt.Errorf("replace program on %s: %w", pin, err)
				}
				continue
			}
			l, err := p.attachTCX(pin, int(c.ifindex), dir.attach, dir.prog)
			if err != nil {
				return err
			}
			p.tcLinks[pin] = l
		}
	}

	// Links pinned for links no longer external (by this or an earlier run).
	entries, err := os.ReadDir(p.cfg.PinDir)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	var errs []error
	for _, ent := range entries {
		pin := ent.Name()
		if !strings.HasPrefix(pin, tcxPinPrefix) || want[pin] {
			continue
		}
		l := p.tcLinks[pin]
		if l == nil {
			if l, err = link.LoadPinnedLink(filepath.Join(p.cfg.PinDir, pin), nil); err != nil {
				errs = append(errs, fmt.Errorf("load stale link %s: %w", pin, err))
				continue
			}
		}
		p.log.Info("detaching from a link that is no longer external", "link", pin)
		errs = append(errs, l.Unpin(), l.Close())
		delete(p.tcLinks, pin)
	}
	for pin, l := range p.tcLinks {
		if !want[pin] {
			errs = append(errs, l.Close())
			delete(p.tcLinks, pin)
		}
	}
	errs = append(errs, deleteOthers(p.tcObjs.KilnLinks, wantLinks), deleteOthers(p.tcObjs.KilnNodeAddrs, wantAddrs))
	return errors.Join(errs...)
}

// attachTCX attaches prog to ifindex, or replaces the program of the link pinned at
// pin when that one is for the same interface and direction.
func (p *Proxy) attachTCX(pin string, ifindex int, attach ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	path := filepath.Join(p.cfg.PinDir, pin)
	old, err := link.LoadPinnedLink(path, nil)
	switch {
	case err == nil:
		info, ierr := old.Info()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, fmt.Errorf("replace program in pinned link %s: %w", path, err)
			}
			p.log.Debug("replaced program in pinned link", "link", path)
			return old, nil
		}
		// The name now belongs to another interface (or the link is gone):
		// attach ours first, then let the old one go.
		p.log.Warn("pinned TCX link is for another interface; re-attaching", "link", path, "info_error", ierr)
		if err := old.Unpin(); err != nil {
			old.Close()
			return nil, fmt.Errorf("unpin stale link %s: %w", path, err)
		}
		defer old.Close()
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("load pinned link %s: %w", path, err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
	if err != nil {
		return nil, fmt.Errorf("attach %s (TCX needs kernel ≥ 6.6): %w", pin, err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	return l, nil
}

func putAll[K comparable, V any](m *ebpf.Map, want map[K]V) error {
	for k, v := range want {
		if err := m.Put(&k, &v); err != nil {
			return fmt.Errorf("put %+v in %s: %w", k, m, err)
		}
	}
	return nil
}

func deleteOthers[K comparable, V any](m *ebpf.Map, want map[K]V) error {
	var k K
	var v V
	var stale []K
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m, err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %+v from %s: %w", k, m, err)
		}
	}
	return nil
}

// replacedStateMaps are the pinned TC maps whose entries Open writes again
// (links, node addresses) or that hold soft state (conntrack, affinity): a
// pinned one whose type, key or value no longer fits the program's is removed
// and made anew, where cilium/ebpf would refuse it. An upgrade that changes
// one of them needs no layout version; one that changes the configuration
// maps does (layoutMaps).
var replacedStateMaps = []string{tcMapKilnLinks, tcMapKilnNodeAddrs, tcMapKilnCt, tcMapKilnCt6, tcMapKilnTcAffinity}

// replaceChangedStateMaps removes the pins of replacedStateMaps whose layout
// differs from the TC object's (spec, loadTc's). A conntrack map that changes loses its flows;
// kiln_ct keeps its IPv4 layout for that reason, and IPv6 flows have their own
// map (kiln_ct6). A different size (Limits) is not replaced: loading fails as
// for the other maps.
func (p *Proxy) replaceChangedStateMaps(spec *ebpf.CollectionSpec) error {
	for _, name := range replacedStateMaps {
		want := spec.Maps[name]
		pin := filepath.Join(p.cfg.PinDir, name)
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned map %s: %w", pin, err)
		}
		typ, key, val := m.Type(), m.KeySize(), m.ValueSize()
		m.Close()
		if typ == want.Type && key == want.KeySize && val == want.ValueSize {
			continue
		}
		if err := os.Remove(pin); err != nil {
			return fmt.Errorf("remove pinned map %s of another layout: %w", pin, err)
		}
		p.log.Warn("replaced a pinned map of another layout", "map", pin,
			"type", typ, "key_size", key, "value_size", val,
			"want_type", want.Type, "want_key_size", want.KeySize, "want_value_size", want.ValueSize)
	}
	return nil
}
