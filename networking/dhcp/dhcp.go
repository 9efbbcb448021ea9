// Package dhcp holds the DHCP clients of a node. Client (DHCPv4) obtains a lease on
// one interface (discover, offer, request, ack over a raw socket, so the interface
// needs no address yet), hands it to the caller to install, renews it at T1, rebinds
// at T2, starts over when it expires or the server says no, and releases it when it
// is stopped. Client6 does the same for DHCPv6 (solicit, advertise, request, reply;
// renew, rebind, release) for one IA_NA address and the DNS options.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// Lease is what a DHCP server gave.
type Lease struct {
	Addr       netip.Prefix // the address with the subnet's length
	Router     netip.Addr   // invalid when the server named none
	DNS        []netip.Addr
	Domain     string
	Search     []string
	Hostname   string
	ServerID   netip.Addr
	Duration   time.Duration
	T1, T2     time.Duration // renew and rebind times, from the server or 1/2 and 7/8
	Acquired   time.Time
	MTU        int
	StaticNets []StaticRoute // classless static routes (option 121)
}

// StaticRoute is a route from option 121.
type StaticRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr
}

// Expires is when the lease ends unless renewed.
func (l *Lease) Expires() time.Time { return l.Acquired.Add(l.Duration) }

// defaultLease is assumed when a server sends no lease time.
const defaultLease = time.Hour

// FromACK reads a lease out of a DHCPACK received at acquired.
func FromACK(ack *dhcpv4.DHCPv4, acquired time.Time) (*Lease, error) {
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return nil, fmt.Errorf("DHCPACK from %s carries no address", ack.ServerIPAddr)
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		bits, _ = m.Size()
	} else if ip.Is4() {
		// Classful default, as the RFC's era intended.
		switch b := ip.As4()[0]; {
		case b < 128:
			bits = 8
		case b < 192:
			bits = 16
		}
	}
	l := &Lease{
		Addr:     netip.PrefixFrom(ip, bits),
		Domain:   ack.DomainName(),
		Hostname: ack.HostName(),
		Duration: ack.IPAddressLeaseTime(defaultLease),
		Acquired: acquired,
	}
	if rs := ack.Router(); len(rs) > 0 {
		if a, ok := netip.AddrFromSlice(rs[0].To4()); ok {
			l.Router = a
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	if s := ack.DomainSearch(); s != nil {
		l.Search = s.Labels
	}
	if a, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		l.ServerID = a
	}
	if b := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		l.MTU = int(b[0])<<8 | int(b[1])
	}
	for _, r := range ack.ClasslessStaticRoute() {
		dst, ok := fromIPNet(r.Dest)
		gw, gok := netip.AddrFromSlice(r.Router.To4())
		if ok && gok {
			l.StaticNets = append(l.StaticNets, StaticRoute{Dst: dst, Gateway: gw})
		}
	}
	l.T1 = ack.IPAddressRenewalTime(l.Duration / 2)
	l.T2 = ack.IPAddressRebindingTime(l.Duration * 7 / 8)
	if l.T1 <= 0 || l.T1 > l.Duration {
		l.T1 = l.Duration / 2
	}
	if l.T2 <= l.T1 || l.T2 > l.Duration {
		l.T2 = l.Duration * 7 / 8
	}
	return l, nil
}

func fromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), true
}

// Client runs DHCP on one interface.
type Client struct {
	// Interface is the link's name; HardwareAddr its MAC.
	Interface    string
	HardwareAddr net.HardwareAddr
	// Hostname is sent to the server (option 12) when set.
	Hostname string
	Log      *slog.Logger
	// Bound installs a new or renewed lease. An error is logged and the lease
	// retried as if the server had not answered.
	Bound func(l *Lease) error
	// Lost removes a lease that expired, was refused or is given up on stop.
	Lost func(l *Lease)
	// Retry is the pause between failed attempts (DefaultRetry when zero).
	Retry time.Duration
}

// DefaultRetry is the pause after a failed DISCOVER round.
const DefaultRetry = 2 * time.Second

// requestTimeout bounds one exchange with the server (nclient4 retries inside it).
const requestTimeout = 10 * time.Second

// Run keeps a lease until ctx ends, then releases the lease held, if any (a
// DHCPRELEASE to its server), and calls Lost for it.
func (c *Client) Run(ctx context.Context) error {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Retry <= 0 {
		c.Retry = DefaultRetry
	}
	log := c.Log.With("interface", c.Interface)
	cl, err := nclient4.New(c.Interface, nclient4.WithHWAddr(c.HardwareAddr), nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("dhcp on %s: %w", c.Interface, err)
	}
	defer cl.Close()
	var mods []dhcpv4.Modifier
	if c.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(c.Hostname)))
	}
	mods = append(mods, dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionInterfaceMTU,
		dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionHostName))

	var held *Lease
	var raw *nclient4.Lease
	lost := func() {
		if held != nil && c.Lost != nil {
			c.Lost(held)
		}
		held, raw = nil, nil
	}
	defer func() {
		// Stopped (the config dropped DHCP, or shutdown): give the address
		// back, so that the server may hand it out again at once.
		if raw != nil {
			if err := release(c.Interface, held, raw); err != nil {
				log.Warn("DHCP release", "addr", held.Addr, "err", err)
			} else {
				log.Info("DHCP lease released", "addr", held.Addr)
			}
		}
		lost()
	}()
	for {
		if held == nil {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			r, err := cl.Request(rctx, mods...)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				log.Debug("no DHCP lease yet", "err", err)
				if !sleep(ctx, c.Retry) {
					return nil
				}
				continue
			}
			l, err := FromACK(r.ACK, time.Now())
			if err != nil {
				log.Warn("unusable DHCP answer", "err", err)
				if !sleep(ctx, c.Retry) {
					return nil
				}
				continue
			}
			if err := c.Bound(l); err != nil {
				log.Error("install DHCP lease", "addr", l.Addr, "err", err)
				if !sleep(ctx, c.Retry) {
					return nil
				}
				continue
			}
			held, raw = l, r
			log.Info("DHCP lease", "addr", l.Addr, "router", l.Router, "dns", l.DNS, "lease", l.Duration)
		}

		// Renew at T1, then every half of what remains until T2 (RFC 2131 4.4.5);
		// past T2 the same broadcast request is a rebind; at expiry start over.
		wait := time.Until(held.Acquired.Add(held.T1))
		if !sleep(ctx, wait) {
			return nil
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			r, err := cl.Renew(rctx, raw, mods...)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) {
				log.Warn("DHCP server refused the renewal; starting over", "addr", held.Addr)
				lost()
				break
			}
			if err == nil {
				l, ferr := FromACK(r.ACK, time.Now())
				if ferr == nil && l.Addr == held.Addr {
					if berr := c.Bound(l); berr == nil {
						held, raw = l, r
						log.Debug("DHCP lease renewed", "addr", l.Addr, "lease", l.Duration)
						break
					} else {
						err = berr
					}
				} else if ferr == nil {
					// A different address: drop the old one and start over.
					lost()
					break
				} else {
					err = ferr
				}
			}
			left := time.Until(held.Expires())
			if left <= 0 {
				log.Warn("DHCP lease expired", "addr", held.Addr, "err", err)
				lost()
				break
			}
			log.Debug("DHCP renewal failed; retrying", "err", err, "left", left)
			if !sleep(ctx, min(left, max(left/2, time.Minute/2))) {
				return nil
			}
		}
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// release sends a DHCPRELEASE for the lease, unicast from the leased address
// to the server (RFC 2131 4.4.6). It goes through an ordinary UDP socket while
// the address is still on the link: a server behind a kernel's UDP stack
// (dnsmasq, the test's server4) never sees nclient4's raw-socket release,
// whose source address 0.0.0.0 the kernel drops as martian for a unicast
// destination.
func release(iface string, l *Lease, raw *nclient4.Lease) error {
	msg, err := dhcpv4.NewReleaseFromACK(raw.ACK)
	if err != nil {
		return fmt.Errorf("build DHCPRELEASE: %w", err)
	}
	if !l.ServerID.IsValid() {
		return errors.New("the lease names no server")
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			serr = unix.BindToDevice(int(fd), iface)
		})
		return errors.Join(err, serr)
	}}
	local := net.JoinHostPort(l.Addr.Addr().String(), strconv.Itoa(dhcpv4.ClientPort))
	pc, err := lc.ListenPacket(context.Background(), "udp4", local)
	if err != nil {
		return fmt.Errorf("DHCPRELEASE socket on %s: %w", local, err)
	}
	defer pc.Close()
	dst := &net.UDPAddr{IP: l.ServerID.AsSlice(), Port: dhcpv4.ServerPort}
	if _, err := pc.WriteTo(msg.ToBytes(), dst); err != nil {
		return fmt.Errorf("send DHCPRELEASE to %s: %w", dst, err)
	}
	return nil
}
