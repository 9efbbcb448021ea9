package networking

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel is a Kernel in memory, for what the build host's kernel lacks
// (VLANs, bonds: CONFIG_VLAN_8021Q and CONFIG_BONDING are off there). It keeps
// the rules the reconcilers rely on, and the kernel's surprises: an enslaved
// link must be down first; deleting a link deletes its VLANs, addresses and
// routes; an alias given at creation is ignored; an address without lifetimes
// is permanent; deleting a subnet's primary IPv4 address deletes its
// secondaries unless promote_secondaries is set (all or on the link);
// deleting an address deletes the routes with it as source, and the last
// IPv4 address of a link takes the link's IPv4 routes with it.
type fakeKernel struct {
	links   []netlink.Link
	addrs   map[int][]netlink.Addr
	routes  []netlink.Route
	drivers map[string]string
	sysctls map[string]string // set ones; the others read "0"
	// noPromote: the kernel acts as if promote_secondaries were never set.
	noPromote bool
	// deleted logs the addresses deleted, by AddrDel or with their primary.
	deleted []string
	next    int
}

func newFakeKernel(names ...string) *fakeKernel {
	f := &fakeKernel{addrs: map[int][]netlink.Addr{}, drivers: map[string]string{}, sysctls: map[string]string{}, next: 1}
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo", Flags: net.FlagLoopback, MTU: 65536}}
	f.add(lo)
	for i, n := range names {
		d := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: n, MTU: 1500,
			HardwareAddr: net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i + 1)}}}
		f.add(d)
		f.drivers[n] = "virtio_net"
	}
	return f
}

func (f *fakeKernel) add(l netlink.Link) {
	l.Attrs().Index = f.next
	f.next++
	f.links = append(f.links, l)
}

func (f *fakeKernel) find(l netlink.Link) (netlink.Link, error) {
	for _, x := range f.links {
		if x.Attrs().Name == l.Attrs().Name {
			return x, nil
		}
	}
	return nil, fmt.Errorf("link %s: %w", l.Attrs().Name, unix.ENODEV)
}

func (f *fakeKernel) byName(n string) netlink.Link {
	l, _ := f.find(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: n}})
	return l
}

func (f *fakeKernel) LinkList() ([]netlink.Link, error) { return slices.Clone(f.links), nil }
func (f *fakeKernel) AddrList(l netlink.Link) ([]netlink.Addr, error) {
	x, err := f.find(l)
	if err != nil {
		return nil, err
	}
	return slices.Clone(f.addrs[x.Attrs().Index]), nil
}
func (f *fakeKernel) RouteList() ([]netlink.Route, error) { return slices.Clone(f.routes), nil }
func (f *fakeKernel) Driver(name string) (string, error) {
	if d, ok := f.drivers[name]; ok {
		return d, nil
	}
	return "", unix.EOPNOTSUPP
}

func (f *fakeKernel) LinkAdd(l netlink.Link) error {
	if _, err := f.find(l); err == nil {
		return unix.EEXIST
	}
	a := *l.Attrs()
	if a.MTU == 0 {
		a.MTU = 1500
	}
	a.Alias = "" // RTM_NEWLINK ignores IFLA_IFALIAS
	switch v := l.(type) {
	case *netlink.Vlan:
		c := *v
		c.LinkAttrs = a
		f.add(&c)
	case *netlink.Bond:
		c := *v
		c.LinkAttrs = a
		f.add(&c)
	default:
		return unix.EOPNOTSUPP
	}
	return nil
}

func (f *fakeKernel) LinkDel(l netlink.Link) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	idx := x.Attrs().Index
	f.links = slices.DeleteFunc(f.links, func(y netlink.Link) bool {
		if y.Attrs().MasterIndex == idx {
			y.Attrs().MasterIndex = 0
		}
		return y.Attrs().Index == idx || y.Attrs().ParentIndex == idx
	})
	delete(f.addrs, idx)
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
	for k := range f.sysctls {
		if strings.HasPrefix(k, "net/ipv4/conf/"+x.Attrs().Name+"/") {
			delete(f.sysctls, k)
		}
	}
	return nil
}

func (f *fakeKernel) LinkSetAlias(l netlink.Link, alias string) error {
	x, err := f.find(l)
	if err == nil {
		x.Attrs().Alias = alias
	}
	return err
}

// sysctlKey checks that key names a parameter the fake has: the IPv4 conf
// of all, default or an existing link.
func (f *fakeKernel) sysctlKey(key string) error {
	rest, ok := strings.CutPrefix(key, "net/ipv4/conf/")
	if !ok {
		return fmt.Errorf("sysctl %s: %w", key, os.ErrNotExist)
	}
	name, _, _ := strings.Cut(rest, "/")
	if name != "all" && name != "default" && f.byName(name) == nil {
		return fmt.Errorf("sysctl %s: %w", key, os.ErrNotExist)
	}
	return nil
}

func (f *fakeKernel) Sysctl(key string) (string, error) {
	if err := f.sysctlKey(key); err != nil {
		return "", err
	}
	if v, ok := f.sysctls[key]; ok {
		return v, nil
	}
	return "0", nil
}

func (f *fakeKernel) SetSysctl(key, value string) error {
	if err := f.sysctlKey(key); err != nil {
		return err
	}
	f.sysctls[key] = value
	return nil
}

func (f *fakeKernel) promotes(name string) bool {
	return !f.noPromote && (f.sysctls["net/ipv4/conf/all/promote_secondaries"] == "1" ||
		f.sysctls["net/ipv4/conf/"+name+"/promote_secondaries"] == "1")
}

func (f *fakeKernel) LinkSetUp(l netlink.Link) error {
	x, err := f.find(l)
	if err == nil {
		x.Attrs().Flags |= net.FlagUp
	}
	return err
}
func (f *fakeKernel) LinkSetDown(l netlink.Link) error {
	x, err := f.find(l)
	if err == nil {
		x.Attrs().Flags &^= net.FlagUp
	}
	return err
}
func (f *fakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	x, err := f.find(l)
	if err == nil {
		x.Attrs().MTU = mtu
	}
	return err
}
func (f *fakeKernel) LinkSetMaster(l netlink.Link, m int) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	if m != 0 && x.Attrs().Flags&net.FlagUp != 0 {
		return fmt.Errorf("enslave %s: link is up: %w", x.Attrs().Name, unix.EBUSY)
	}
	x.Attrs().MasterIndex = m
	return nil
}
func (f *fakeKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	i := x.Attrs().Index
	for _, y := range f.addrs[i] {
		if y.IPNet.String() == a.IPNet.String() {
			return unix.EEXIST
		}
	}
	f.addrs[i] = append(f.addrs[i], fakeAddr(a))
	return nil
}

// fakeAddr is a as the kernel reports it back: without lifetimes it is
// permanent.
func fakeAddr(a *netlink.Addr) netlink.Addr {
	c := *a
	if c.ValidLft == 0 && c.PreferedLft == 0 {
		c.ValidLft, c.PreferedLft = 0xffffffff, 0xffffffff
		c.Flags |= unix.IFA_F_PERMANENT
	} else {
		c.Flags &^= unix.IFA_F_PERMANENT
	}
	return c
}

func (f *fakeKernel) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	i := x.Attrs().Index
	for j, y := range f.addrs[i] {
		if y.IPNet.String() == a.IPNet.String() {
			f.addrs[i][j] = fakeAddr(a)
			return nil
		}
	}
	f.addrs[i] = append(f.addrs[i], fakeAddr(a))
	return nil
}

// sameSubnet is the kernel's test for a secondary IPv4 address: the same
// mask and network as the primary.
func sameSubnet(a, b *net.IPNet) bool {
	return a.IP.To4() != nil && b.IP.To4() != nil && slices.Equal(a.Mask, b.Mask) && a.Contains(b.IP)
}
func (f *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	i := x.Attrs().Index
	as := f.addrs[i]
	at := slices.IndexFunc(as, func(y netlink.Addr) bool { return y.IPNet.String() == a.IPNet.String() })
	if at < 0 {
		return nil
	}
	gone := []net.IP{as[at].IP}
	primary := !slices.ContainsFunc(as[:at], func(y netlink.Addr) bool { return sameSubnet(y.IPNet, as[at].IPNet) })
	del := as[at]
	as = slices.Delete(slices.Clone(as), at, at+1)
	if primary && !f.promotes(x.Attrs().Name) {
		as = slices.DeleteFunc(as, func(y netlink.Addr) bool {
			if sameSubnet(del.IPNet, y.IPNet) {
				gone = append(gone, y.IP)
				return true
			}
			return false
		})
	}
	f.addrs[i] = as
	for _, g := range gone {
		f.deleted = append(f.deleted, g.String())
	}
	hasV4 := slices.ContainsFunc(as, func(y netlink.Addr) bool { return y.IP.To4() != nil })
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool {
		if r.LinkIndex != i {
			return false
		}
		if r.Src != nil && slices.ContainsFunc(gone, r.Src.Equal) {
			return true
		}
		return !hasV4 && keyOf(r).dst.Addr().Is4()
	})
	return nil
}
func (f *fakeKernel) RouteReplace(r *netlink.Route) error {
	k := keyOf(*r)
	f.routes = slices.DeleteFunc(f.routes, func(y netlink.Route) bool {
		yk := keyOf(y)
		return yk.dst == k.dst && yk.metric == k.metric
	})
	f.routes = append(f.routes, *r)
	return nil
}
func (f *fakeKernel) RouteDel(r *netlink.Route) error {
	k := keyOf(*r)
	n := len(f.routes)
	f.routes = slices.DeleteFunc(f.routes, func(y netlink.Route) bool { return keyOf(y) == k })
	if len(f.routes) == n {
		return nil
	}
	return nil
}
