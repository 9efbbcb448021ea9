package server

import (
	"context"
	"net/netip"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kiln-os/kiln/machined/api/machine"
)

// NetworkStatus is the host network as the node has it, for the Links,
// Addresses, Routes, Resolvers, Hostname, TimeStatus and Leases calls.
type NetworkStatus struct {
	Links            []NetLink
	Addresses        []NetAddress
	Routes           []NetRoute
	Nameservers      []netip.Addr
	Search           []string
	NameserverSource string
	Hostname         string
	HostnameSource   string
	Time             TimeStatus
	Leases           []NetLease
}

// NetLease is a DHCPv4 or DHCPv6 lease held by a link.
type NetLease struct {
	Link, Family string // Family: "ipv4" or "ipv6"
	Address      netip.Prefix
	Gateway      netip.Addr // invalid: none
	Routes       []NetLeaseRoute
	DNS          []netip.Addr
	Domain       string
	Search       []string
	Hostname     string
	MTU          int
	// Server is the server's address (IPv4) or DUID in hex (IPv6).
	Server                           string
	Obtained, Renew, Rebind, Expires time.Time
}

// NetLeaseRoute is a route a lease installs.
type NetLeaseRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr // invalid: on-link
}

// NetLink is a network link.
type NetLink struct {
	Name, Type, HardwareAddr, Master string
	Index, MTU                       int
	Up, Carrier, Managed             bool
}

// NetAddress is an address on a link.
type NetAddress struct {
	Link          string
	Prefix        netip.Prefix
	Scope, Source string
	Dynamic       bool
}

// NetRoute is a route of the main table.
type NetRoute struct {
	Link            string
	Dst             netip.Prefix
	Gateway, Source netip.Addr
	Metric          uint32
	Protocol, Scope string
}

// TimeStatus is the state of time synchronisation.
type TimeStatus struct {
	Enabled, Synced bool
	Servers         []string
	Server          string
	Offset, Delay   time.Duration
	Stratum         uint8
	LastSync        time.Time
	LastError       string
	Steps, Slews    int
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (v *service) Links(ctx context.Context, _ *machine.LinksRequest) (*machine.LinksResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.LinksResponse{}
	for _, l := range st.Links {
		resp.Links = append(resp.Links, &machine.Link{
			Name: l.Name, Index: uint32(l.Index), Type: l.Type, HardwareAddr: l.HardwareAddr, Mtu: uint32(l.MTU),
			Up: l.Up, Carrier: l.Carrier, Master: l.Master, Managed: l.Managed,
		})
	}
	return resp, nil
}

func (v *service) Addresses(ctx context.Context, _ *machine.AddressesRequest) (*machine.AddressesResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.AddressesResponse{}
	for _, a := range st.Addresses {
		resp.Addresses = append(resp.Addresses, &machine.Address{
			Link: a.Link, Address: a.Prefix.String(), Scope: a.Scope, Source: a.Source, Dynamic: a.Dynamic,
		})
	}
	return resp, nil
}

func (v *service) Routes(ctx context.Context, _ *machine.RoutesRequest) (*machine.RoutesResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.RoutesResponse{}
	for _, r := range st.Routes {
		resp.Routes = append(resp.Routes, &machine.Route{
			Link: r.Link, Destination: r.Dst.String(), Gateway: addrString(r.Gateway), Source: addrString(r.Source),
			Metric: r.Metric, Protocol: r.Protocol, Scope: r.Scope,
		})
	}
	return resp, nil
}

func (v *service) Resolvers(ctx context.Context, _ *machine.ResolversRequest) (*machine.ResolversResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.ResolversResponse{Search: st.Search, Source: st.NameserverSource}
	for _, a := range st.Nameservers {
		resp.Nameservers = append(resp.Nameservers, a.String())
	}
	return resp, nil
}

func (v *service) Hostname(ctx context.Context, _ *machine.HostnameRequest) (*machine.HostnameResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	return &machine.HostnameResponse{Hostname: st.Hostname, Source: st.HostnameSource}, nil
}

func (v *service) TimeStatus(ctx context.Context, _ *machine.TimeStatusRequest) (*machine.TimeStatusResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	t := st.Time
	resp := &machine.TimeStatusResponse{
		Enabled: t.Enabled, Synced: t.Synced, Servers: t.Servers, Server: t.Server,
		Stratum: uint32(t.Stratum), LastError: t.LastError, Steps: uint32(t.Steps), Slews: uint32(t.Slews),
	}
	if t.Synced {
		resp.Offset = durationpb.New(t.Offset)
		resp.Delay = durationpb.New(t.Delay)
		resp.LastSync = timestamppb.New(t.LastSync)
	}
	return resp, nil
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// LeaseToProto converts a lease to its wire form.
func LeaseToProto(l NetLease) *machine.Lease {
	out := &machine.Lease{
		Link: l.Link, Family: l.Family, Gateway: addrString(l.Gateway), Domain: l.Domain,
		Search: l.Search, Hostname: l.Hostname, Mtu: uint32(max(l.MTU, 0)), Server: l.Server,
		Obtained: timestamp(l.Obtained), Renew: timestamp(l.Renew), Rebind: timestamp(l.Rebind), Expires: timestamp(l.Expires),
	}
	if l.Address.IsValid() {
		out.Address = l.Address.String()
	}
	for _, r := range l.Routes {
		out.Routes = append(out.Routes, &machine.LeaseRoute{Destination: r.Dst.String(), Gateway: addrString(r.Gateway)})
	}
	for _, a := range l.DNS {
		out.Dns = append(out.Dns, a.String())
	}
	return out
}

func (v *service) Leases(ctx context.Context, _ *machine.LeasesRequest) (*machine.LeasesResponse, error) {
	st, err := v.s.m.NetworkStatus(ctx)
	if err != nil {
		return nil, err
	}
	resp := &machine.LeasesResponse{}
	for _, l := range st.Leases {
		resp.Leases = append(resp.Leases, LeaseToProto(l))
	}
	return resp, nil
}
