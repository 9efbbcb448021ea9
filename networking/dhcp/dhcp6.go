package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
)

// Lease6 is what a DHCPv6 server gave: one address of an IA_NA and the
// DNS options. DHCPv6 carries no prefix length and no router: the on-link
// prefix and the default route come from Router Advertisements.
type Lease6 struct {
	Addr      netip.Addr
	DNS       []netip.Addr
	Search    []string
	ServerID  string // the server's DUID, in hex
	Preferred time.Duration
	Valid     time.Duration
	T1, T2    time.Duration
	Acquired  time.Time
}

// Expires is when the address ends unless renewed.
func (l *Lease6) Expires() time.Time { return l.Acquired.Add(l.Valid) }

// FromReply reads a lease out of a DHCPv6 REPLY received at acquired.
func FromReply(reply *dhcpv6.Message, acquired time.Time) (*Lease6, error) {
	if st := reply.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
		return nil, fmt.Errorf("DHCPv6 server says %s: %s", st.StatusCode, st.StatusMessage)
	}
	ia := reply.Options.OneIANA()
	if ia == nil {
		return nil, errors.New("DHCPv6 reply carries no IA_NA")
	}
	if st := ia.Options.Status(); st != nil && st.StatusCode != iana.StatusSuccess {
		return nil, fmt.Errorf("DHCPv6 server refused the address: %s: %s", st.StatusCode, st.StatusMessage)
	}
	ad := ia.Options.OneAddress()
	if ad == nil {
		return nil, errors.New("DHCPv6 reply carries no address")
	}
	a, ok := netip.AddrFromSlice(ad.IPv6Addr.To16())
	if !ok || a.IsUnspecified() || ad.ValidLifetime == 0 {
		return nil, fmt.Errorf("DHCPv6 reply carries no usable address (%v, valid %s)", ad.IPv6Addr, ad.ValidLifetime)
	}
	l := &Lease6{
		Addr: a, Acquired: acquired,
		Preferred: ad.PreferredLifetime, Valid: ad.ValidLifetime,
		T1: ia.T1, T2: ia.T2,
	}
	if l.Preferred > l.Valid {
		l.Preferred = l.Valid
	}
	if sid := reply.Options.ServerID(); sid != nil {
		l.ServerID = fmt.Sprintf("%x", sid.ToBytes())
	}
	for _, d := range reply.Options.DNS() {
		if x, ok := netip.AddrFromSlice(d.To16()); ok {
			l.DNS = append(l.DNS, x)
		}
	}
	if s := reply.Options.DomainSearchList(); s != nil {
		l.Search = s.Labels
	}
	// RFC 8415 21.4: zero leaves T1 and T2 to the client; 0.5 and 0.8 of
	// the preferred lifetime are its suggestions.
	if l.T1 <= 0 || l.T1 > l.Valid {
		l.T1 = l.Preferred / 2
	}
	if l.T2 <= l.T1 || l.T2 > l.Valid {
		l.T2 = l.Preferred * 4 / 5
	}
	if l.T2 <= l.T1 {
		l.T2 = l.T1
	}
	return l, nil
}

// Client6 runs DHCPv6 on one interface.
type Client6 struct {
	Interface    string
	HardwareAddr net.HardwareAddr
	Log          *slog.Logger
	// Bound installs a new or renewed lease; an error is logged and the
	// exchange retried.
	Bound func(l *Lease6) error
	// Lost removes a lease that expired, was refused or is given up on stop.
	Lost func(l *Lease6)
	// Retry is the pause between failed attempts (DefaultRetry when zero).
	Retry time.Duration
}

// duid is the client's DUID-LL: stable across restarts of machined, so that
// a server gives the node the same address again.
func (c *Client6) duid() dhcpv6.DUID {
	return &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: c.HardwareAddr}
}

// Run keeps a lease until ctx ends, then releases it (a RELEASE to its server)
// and calls Lost.
func (c *Client6) Run(ctx context.Context) error {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Retry <= 0 {
		c.Retry = DefaultRetry
	}
	log := c.Log.With("interface", c.Interface, "family", "ipv6")
	// The client's socket is bound to the link-local address, which is
	// tentative for a second or so after the link comes up (DAD).
	var cl *nclient6.Client
	for {
		var err error
		cl, err = nclient6.New(c.Interface, nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(3))
		if err == nil {
			break
		}
		log.Debug("DHCPv6 socket not ready", "err", err)
		if !sleep(ctx, c.Retry) {
			return nil
		}
	}
	defer cl.Close()
	mods := []dhcpv6.Modifier{
		dhcpv6.WithClientID(c.duid()),
		dhcpv6.WithRequestedOptions(dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList),
	}

	var held *Lease6
	var reply *dhcpv6.Message // the last REPLY: its client, server and IA_NA options
	lost := func() {
		if held != nil && c.Lost != nil {
			c.Lost(held)
		}
		held, reply = nil, nil
	}
	defer func() {
		if reply != nil {
			if err := c.release(cl, reply); err != nil {
				log.Warn("DHCPv6 release", "addr", held.Addr, "err", err)
			} else {
				log.Info("DHCPv6 lease released", "addr", held.Addr)
			}
		}
		lost()
	}()
	for {
		if held == nil {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			l, r, err := c.acquire(rctx, cl, mods)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				if err = c.Bound(l); err == nil {
					held, reply = l, r
					log.Info("DHCPv6 lease", "addr", l.Addr, "dns", l.DNS, "valid", l.Valid)
				}
			}
			if err != nil {
				log.Debug("no DHCPv6 lease yet", "err", err)
				if !sleep(ctx, c.Retry) {
					return nil
				}
				continue
			}
		}
		if !sleep(ctx, time.Until(held.Acquired.Add(held.T1))) {
			return nil
		}
		for {
			// Before T2 a RENEW to the server that gave the lease; after, a
			// REBIND to any server (RFC 8415 18.2.4, 18.2.5).
			typ := dhcpv6.MessageTypeRenew
			if time.Now().After(held.Acquired.Add(held.T2)) {
				typ = dhcpv6.MessageTypeRebind
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			l, r, err := c.extend(rctx, cl, reply, typ, mods)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err == nil && l.Addr != held.Addr {
				lost()
				break
			}
			if err == nil {
				if err = c.Bound(l); err == nil {
					held, reply = l, r
					log.Debug("DHCPv6 lease renewed", "addr", l.Addr, "valid", l.Valid)
					break
				}
			}
			left := time.Until(held.Expires())
			if left <= 0 {
				log.Warn("DHCPv6 lease expired", "addr", held.Addr, "err", err)
				lost()
				break
			}
			log.Debug("DHCPv6 renewal failed; retrying", "err", err, "left", left)
			if !sleep(ctx, min(left, max(left/2, time.Minute/2))) {
				return nil
			}
		}
	}
}

// acquire solicits, requests and reads the lease from the REPLY.
func (c *Client6) acquire(ctx context.Context, cl *nclient6.Client, mods []dhcpv6.Modifier) (*Lease6, *dhcpv6.Message, error) {
	adv, err := cl.Solicit(ctx, mods...)
	if err != nil {
		return nil, nil, fmt.Errorf("solicit: %w", err)
	}
	r, err := cl.Request(ctx, adv, mods...)
	if err != nil {
		return nil, nil, fmt.Errorf("request: %w", err)
	}
	l, err := FromReply(r, time.Now())
	return l, r, err
}

// message builds a RENEW, REBIND or RELEASE for the lease of the last REPLY.
func message(reply *dhcpv6.Message, typ dhcpv6.MessageType, mods []dhcpv6.Modifier) (*dhcpv6.Message, error) {
	m, err := dhcpv6.NewMessage()
	if err != nil {
		return nil, err
	}
	m.MessageType = typ
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, mod := range mods {
		mod(m)
	}
	if typ != dhcpv6.MessageTypeRebind {
		sid := reply.GetOneOption(dhcpv6.OptionServerID)
		if sid == nil {
			return nil, errors.New("the DHCPv6 reply named no server")
		}
		m.AddOption(sid)
	}
	m.AddOption(reply.Options.OneIANA())
	return m, nil
}

func (c *Client6) extend(ctx context.Context, cl *nclient6.Client, reply *dhcpv6.Message, typ dhcpv6.MessageType, mods []dhcpv6.Modifier) (*Lease6, *dhcpv6.Message, error) {
	m, err := message(reply, typ, mods)
	if err != nil {
		return nil, nil, err
	}
	r, err := cl.SendAndRead(ctx, nclient6.AllDHCPRelayAgentsAndServers, m, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", typ, err)
	}
	l, err := FromReply(r, time.Now())
	return l, r, err
}

// releaseWait bounds the wait for the server's answer to a RELEASE: the
// address goes either way.
const releaseWait = time.Second

func (c *Client6) release(cl *nclient6.Client, reply *dhcpv6.Message) error {
	m, err := message(reply, dhcpv6.MessageTypeRelease, []dhcpv6.Modifier{dhcpv6.WithClientID(c.duid())})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseWait)
	defer cancel()
	_, err = cl.SendAndRead(ctx, nclient6.AllDHCPRelayAgentsAndServers, m, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nclient6.ErrNoResponse) {
		return nil // sent; the server need not answer in time
	}
	return err
}
