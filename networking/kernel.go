package networking

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteProtocol marks the routes Kiln installs (rtm_protocol). Routes with
// another protocol (the kernel's prefix routes, DHCP, an operator's) are never
// removed by the static reconciler. 75 is unassigned in iproute2's rt_protos.
const RouteProtocol = netlink.RouteProtocol(75)

// LinkAlias marks the links Kiln creates (VLANs, bonds) in IFLA_IFALIAS, so
// that after a restart it still knows which virtual links are its own. The
// kernel ignores IFLA_IFALIAS in RTM_NEWLINK when it creates a link: the alias
// is set by a separate LinkSetAlias right after LinkAdd.
const LinkAlias = "kiln-managed"

// Kernel is the small interface between the reconcilers and netlink (and the
// few sysctls they set): the reads they need to compare and the writes they
// make. A counting wrapper
// proves idempotence (a second pass writes nothing) and a fake stands in for
// kernels without VLAN or bonding support.
type Kernel interface {
	LinkList() ([]netlink.Link, error)
	AddrList(l netlink.Link) ([]netlink.Addr, error)
	// RouteList returns the routes of the main table, both families.
	RouteList() ([]netlink.Route, error)
	// Driver returns the kernel driver of a link ("virtio_net", "veth").
	Driver(name string) (string, error)

	// Sysctl reads a kernel parameter by its path under /proc/sys
	// ("net/ipv4/conf/all/promote_secondaries"); a missing one is an error
	// that matches os.ErrNotExist.
	Sysctl(key string) (string, error)

	// LinkAdd creates a link. Like the kernel, it ignores the link's Alias:
	// LinkSetAlias sets it.
	LinkAdd(l netlink.Link) error
	LinkDel(l netlink.Link) error
	LinkSetAlias(l netlink.Link, alias string) error
	LinkSetUp(l netlink.Link) error
	LinkSetDown(l netlink.Link) error
	LinkSetMTU(l netlink.Link, mtu int) error
	// LinkSetMaster enslaves l to the link with index master; 0 releases it.
	LinkSetMaster(l netlink.Link, master int) error
	AddrAdd(l netlink.Link, a *netlink.Addr) error
	// AddrReplace adds an address or updates the one there: its lifetimes
	// (none: permanent) and flags.
	AddrReplace(l netlink.Link, a *netlink.Addr) error
	AddrDel(l netlink.Link, a *netlink.Addr) error
	RouteReplace(r *netlink.Route) error
	RouteDel(r *netlink.Route) error
	// SetSysctl writes a kernel parameter (key as for Sysctl).
	SetSysctl(key, value string) error
}

// NetlinkKernel is the Kernel of a network namespace, through a netlink
// handle.
type NetlinkKernel struct {
	h *netlink.Handle
	// ProcSys is where Sysctl and SetSysctl find the kernel's parameters
	// (/proc/sys when empty). /proc/sys shows the network namespace of the
	// calling thread, whatever namespace the handle is in.
	ProcSys string
}

// NewNetlinkKernel returns the Kernel of the network namespace h belongs to;
// a nil h is the namespace of the calling thread.
func NewNetlinkKernel(h *netlink.Handle) *NetlinkKernel {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &NetlinkKernel{h: h}
}

func (k *NetlinkKernel) LinkList() ([]netlink.Link, error) {
	ls, err := k.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	return ls, nil
}

func (k *NetlinkKernel) AddrList(l netlink.Link) ([]netlink.Addr, error) {
	as, err := k.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	return as, nil
}

func (k *NetlinkKernel) RouteList() ([]netlink.Route, error) {
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

// Driver asks the link's driver by the ethtool ioctl. It works in the
// namespace of the calling thread, whatever namespace the handle is in.
func (k *NetlinkKernel) Driver(name string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("driver of %s: %w", name, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		return "", fmt.Errorf("driver of %s: %w", name, err)
	}
	return unix.ByteSliceToString(info.Driver[:]), nil
}

func (k *NetlinkKernel) sysctlPath(key string) string {
	root := k.ProcSys
	if root == "" {
		root = "/proc/sys"
	}
	return filepath.Join(root, filepath.FromSlash(key))
}

func (k *NetlinkKernel) Sysctl(key string) (string, error) {
	b, err := os.ReadFile(k.sysctlPath(key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (k *NetlinkKernel) SetSysctl(key, value string) error {
	if err := os.WriteFile(k.sysctlPath(key), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s to %s: %w", key, value, err)
	}
	return nil
}

func wrap(op string, l netlink.Link, err error) error {
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, l.Attrs().Name, err)
	}
	return nil
}

func (k *NetlinkKernel) LinkAdd(l netlink.Link) error { return wrap("create link", l, k.h.LinkAdd(l)) }
func (k *NetlinkKernel) LinkDel(l netlink.Link) error { return wrap("delete link", l, k.h.LinkDel(l)) }
func (k *NetlinkKernel) LinkSetAlias(l netlink.Link, alias string) error {
	return wrap(fmt.Sprintf("set alias %q on", alias), l, k.h.LinkSetAlias(l, alias))
}
func (k *NetlinkKernel) LinkSetUp(l netlink.Link) error {
	return wrap("set up", l, k.h.LinkSetUp(l))
}
func (k *NetlinkKernel) LinkSetDown(l netlink.Link) error {
	return wrap("set down", l, k.h.LinkSetDown(l))
}
func (k *NetlinkKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	return wrap(fmt.Sprintf("set MTU %d on", mtu), l, k.h.LinkSetMTU(l, mtu))
}
func (k *NetlinkKernel) LinkSetMaster(l netlink.Link, master int) error {
	if master == 0 {
		return wrap("release", l, k.h.LinkSetNoMaster(l))
	}
	return wrap("enslave", l, k.h.LinkSetMasterByIndex(l, master))
}
func (k *NetlinkKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	if err := k.h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", a.IPNet, l.Attrs().Name, err)
	}
	return nil
}
func (k *NetlinkKernel) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	if err := k.h.AddrReplace(l, a); err != nil {
		return fmt.Errorf("replace %s on %s: %w", a.IPNet, l.Attrs().Name, err)
	}
	return nil
}
func (k *NetlinkKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	if err := k.h.AddrDel(l, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from %s: %w", a.IPNet, l.Attrs().Name, err)
	}
	return nil
}
func (k *NetlinkKernel) RouteReplace(r *netlink.Route) error {
	if err := k.h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s: %w", r, err)
	}
	return nil
}
func (k *NetlinkKernel) RouteDel(r *netlink.Route) error {
	if err := k.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove route %s: %w", r, err)
	}
	return nil
}

// CountingKernel counts the writes made through a Kernel (netlink writes and
// sysctl writes).
type CountingKernel struct {
	Kernel
	writes atomic.Int64
}

// Counting wraps k.
func Counting(k Kernel) *CountingKernel { return &CountingKernel{Kernel: k} }

// Writes is the number of write calls so far.
func (c *CountingKernel) Writes() int64 { return c.writes.Load() }

func (c *CountingKernel) w() { c.writes.Add(1) }

func (c *CountingKernel) LinkAdd(l netlink.Link) error { c.w(); return c.Kernel.LinkAdd(l) }
func (c *CountingKernel) LinkDel(l netlink.Link) error { c.w(); return c.Kernel.LinkDel(l) }
func (c *CountingKernel) LinkSetAlias(l netlink.Link, alias string) error {
	c.w()
	return c.Kernel.LinkSetAlias(l, alias)
}
func (c *CountingKernel) LinkSetUp(l netlink.Link) error {
	c.w()
	return c.Kernel.LinkSetUp(l)
}
func (c *CountingKernel) LinkSetDown(l netlink.Link) error {
	c.w()
	return c.Kernel.LinkSetDown(l)
}
func (c *CountingKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	c.w()
	return c.Kernel.LinkSetMTU(l, mtu)
}
func (c *CountingKernel) LinkSetMaster(l netlink.Link, m int) error {
	c.w()
	return c.Kernel.LinkSetMaster(l, m)
}
func (c *CountingKernel) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	c.w()
	return c.Kernel.AddrAdd(l, a)
}
func (c *CountingKernel) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	c.w()
	return c.Kernel.AddrReplace(l, a)
}
func (c *CountingKernel) AddrDel(l netlink.Link, a *netlink.Addr) error {
	c.w()
	return c.Kernel.AddrDel(l, a)
}
func (c *CountingKernel) RouteReplace(r *netlink.Route) error {
	c.w()
	return c.Kernel.RouteReplace(r)
}
func (c *CountingKernel) RouteDel(r *netlink.Route) error { c.w(); return c.Kernel.RouteDel(r) }
func (c *CountingKernel) SetSysctl(key, value string) error {
	c.w()
	return c.Kernel.SetSysctl(key, value)
}

// errNoDevice is what the kernel says about a link that went away.
var errNoDevice error = unix.ENODEV
