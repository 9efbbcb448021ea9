package networking

import (
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel is a Kernel in memory, for what the build host's kernel lacks
// (VLANs, bonds: CONFIG_VLAN_8021Q and CONFIG_BONDING are off there). It keeps
// the rules the reconcilers rely on: an enslaved link must be down first,
// deleting a link deletes its VLANs, addresses and routes.
type fakeKernel struct {
	links   []netlink.Link
	addrs   map[int][]netlink.Addr
	routes  []netlink.Route
	drivers map[string]string
	next    int
}

func newFakeKernel(names ...string) *fakeKernel {
	f := &fakeKernel{addrs: map[int][]netlink.Addr{}, drivers: map[string]string{}, next: 1}
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
	return nil
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
	f.addrs[i] = append(f.addrs[i], *a)
	return nil
}
func (f *fakeKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	x, err := f.find(l)
	if err != nil {
		return err
	}
	i := x.Attrs().Index
	f.addrs[i] = slices.DeleteFunc(f.addrs[i], func(y netlink.Addr) bool { return y.IPNet.String() == a.IPNet.String() })
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
