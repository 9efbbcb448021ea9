//go:build linux

package serviceproxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
)

// The TC programs' logic, run on crafted packets with BPF_PROG_TEST_RUN: no links,
// no traffic. Checksums in the packets the programs write are compared byte for
// byte with checksums computed here from scratch.

// TCX verdicts (linux/bpf.h, kernel ≥ 6.6).
const (
	tcxNext     = ^uint32(0) // -1
	tcxPass     = 0
	tcxDrop     = 2
	tcxRedirect = 7
)

// csum is the Internet checksum (RFC 1071) of the concatenated parts.
func csum(parts ...[]byte) uint16 {
	var sum uint32
	var odd []byte
	for _, p := range parts {
		b := append(odd, p...)
		odd = nil
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			odd = []byte{b[0]}
		}
	}
	if len(odd) == 1 {
		sum += uint32(odd[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pkt is the part of an Ethernet/IPv4-or-IPv6/TCP-or-UDP packet the tests look at;
// the family is the addresses'.
type pkt struct {
	Proto    Proto
	Src, Dst netip.AddrPort
	Payload  string
	NoCsum   bool  // UDP without a checksum (IPv4)
	ExtHdr   bool  // IPv6: a Destination Options header before TCP/UDP
	TCPFlags uint8 // 0: SYN
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// ipProtoDstOpts is the IPv6 Destination Options extension header.
const ipProtoDstOpts = 60

// build makes the frame, with correct checksums.
func (p pkt) build() []byte {
	var l4 []byte
	if p.Proto == TCP {
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint32(l4[4:], 1000) // seq
		l4[12] = 5 << 4
		l4[13] = tcpSYN
		if p.TCPFlags != 0 {
			l4[13] = p.TCPFlags
		}
		binary.BigEndian.PutUint16(l4[14:], 64240)
	} else {
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(p.Payload)))
	}
	binary.BigEndian.PutUint16(l4[0:], p.Src.Port())
	binary.BigEndian.PutUint16(l4[2:], p.Dst.Port())
	l4 = append(l4, p.Payload...)

	var eth, ip []byte
	if p.Src.Addr().Is6() {
		eth = []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd}
		ip = make([]byte, 40)
		ip[0] = 0x60
		ip[6] = byte(p.Proto)
		ip[7] = 64 // hop limit
		s, d := p.Src.Addr().As16(), p.Dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		if p.ExtHdr {
			// Next header, length 0 (8 bytes), a PadN option of 4.
			ip = append(ip, byte(p.Proto), 0, 1, 4, 0, 0, 0, 0)
			ip[6] = ipProtoDstOpts
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40+len(l4)))
	} else {
		eth = []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = byte(p.Proto)
		s, d := p.Src.Addr().As4(), p.Dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], csum(ip))
	}
	off := l4CsumOff(p.Proto)
	if !p.NoCsum {
		c := csum(pseudo(p.Src.Addr(), p.Dst.Addr(), p.Proto, len(l4)), l4)
		if p.Proto == UDP && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[off:], c)
	}
	return append(append(eth, ip...), l4...)
}

func l4CsumOff(p Proto) int {
	if p == TCP {
		return 16
	}
	return 6
}

// pseudo is the pseudo header that the TCP/UDP checksum covers: RFC 793 for IPv4,
// RFC 8200 section 8.1 for IPv6.
func pseudo(src, dst netip.Addr, proto Proto, l4len int) []byte {
	if src.Is4() {
		ph := make([]byte, 12)
		s, d := src.As4(), dst.As4()
		copy(ph, s[:])
		copy(ph[4:], d[:])
		ph[9] = byte(proto)
		binary.BigEndian.PutUint16(ph[10:], uint16(l4len))
		return ph
	}
	ph := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(ph, s[:])
	copy(ph[16:], d[:])
	binary.BigEndian.PutUint32(ph[32:], uint32(l4len))
	ph[39] = byte(proto)
	return ph
}

// parse reads a frame the program wrote back, and checks its checksums against
// ones computed from scratch (the IPv4 header's, and TCP's or UDP's).
func parse(t *testing.T, b []byte) pkt {
	t.Helper()
	var (
		proto Proto
		s, d  netip.Addr
		l4    []byte
	)
	if binary.BigEndian.Uint16(b[12:]) == 0x86dd {
		ip := b[14:54]
		l4 = b[54:]
		proto = Proto(ip[6])
		s = netip.AddrFrom16([16]byte(ip[8:24]))
		d = netip.AddrFrom16([16]byte(ip[24:40]))
		if got, want := int(binary.BigEndian.Uint16(ip[4:])), len(l4); got != want {
			t.Errorf("IPv6 payload length %d, want %d", got, want)
		}
	} else {
		ip := b[14:34]
		l4 = b[34:]
		proto = Proto(ip[9])
		s = netip.AddrFrom4([4]byte(ip[12:16]))
		d = netip.AddrFrom4([4]byte(ip[16:20]))
		ipCopy := append([]byte(nil), ip...)
		ipCopy[10], ipCopy[11] = 0, 0
		if want, got := csum(ipCopy), binary.BigEndian.Uint16(ip[10:]); got != want {
			t.Errorf("IP checksum %#04x, want %#04x", got, want)
		}
	}
	p := pkt{
		Proto: proto,
		Src:   netip.AddrPortFrom(s, binary.BigEndian.Uint16(l4[0:])),
		Dst:   netip.AddrPortFrom(d, binary.BigEndian.Uint16(l4[2:])),
	}
	hdr := map[Proto]int{TCP: 20, UDP: 8}[proto]
	p.Payload = string(l4[hdr:])

	off := l4CsumOff(proto)
	got := binary.BigEndian.Uint16(l4[off:])
	if proto == UDP && got == 0 {
		if s.Is6() {
			t.Errorf("UDP checksum 0 in an IPv6 packet (RFC 8200 section 8.1 forbids it)")
		}
		p.NoCsum = true
		return p
	}
	l4Copy := append([]byte(nil), l4...)
	l4Copy[off], l4Copy[off+1] = 0, 0
	want := csum(pseudo(s, d, proto, len(l4)), l4Copy)
	if proto == UDP && want == 0 {
		want = 0xffff
	}
	if got != want {
		t.Errorf("%s checksum %#04x, want %#04x", proto, got, want)
	}
	return p
}

// skbCtx is a struct __sk_buff up to ifindex, with only ingress_ifindex set.
func skbCtx(ingressIfindex uint32) []byte {
	b := make([]byte, 44)
	binary.NativeEndian.PutUint32(b[36:], ingressIfindex)
	return b
}

// run runs prog on p as if it came in on (or went out of) ifindex.
func run(t *testing.T, prog *ebpf.Program, ifindex uint32, in []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(in)+256)
	opts := &ebpf.RunOptions{Data: in, DataOut: out, Context: skbCtx(ifindex)}
	ret, err := prog.Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// testIfindex is an interface index no link has: the programs' FIB lookup fails on
// it, so packets they would route themselves go up the stack (TCX_PASS) here.
const testIfindex = 4242

func TestTCPrograms(t *testing.T) {
	s := newSandbox(t)
	p := openProxy(t, s)
	t.Cleanup(func() { p.Remove() })

	var (
		node     = netip.MustParseAddr("10.1.0.1")
		client   = netip.MustParseAddrPort("192.0.2.10:40000")
		remote   = netip.MustParseAddrPort("10.2.0.2:8080")
		remote2  = netip.MustParseAddrPort("10.2.0.3:8080")
		localBE  = netip.MustParseAddrPort("10.1.0.1:8081")
		extIP    = netip.MustParseAddr("203.0.113.7")
		lbIP     = netip.MustParseAddr("203.0.113.8")
		other    = netip.MustParseAddr("198.51.100.1")
		ingress  = p.tcObjs.KilnTcIngress
		egress   = p.tcObjs.KilnTcEgress
		frontend = func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node, port) }

		// The same for IPv6: the node is dual-stack, and each IPv6 Service
		// has the NodePort of its IPv4 twin, as a dual-stack Kubernetes
		// Service has.
		node6     = netip.MustParseAddr("fd00:1::1")
		client6   = netip.MustParseAddrPort("[2001:db8::10]:40000")
		remote6   = netip.MustParseAddrPort("[fd00:2::2]:8080")
		remote6b  = netip.MustParseAddrPort("[fd00:2::3]:8080")
		localBE6  = netip.MustParseAddrPort("[fd00:1::1]:8081")
		extIP6    = netip.MustParseAddr("2001:db8:ff::7")
		lbIP6     = netip.MustParseAddr("2001:db8:ff::8")
		other6    = netip.MustParseAddr("2001:db8:ff::99")
		frontend6 = func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node6, port) }
	)
	// The link config SetExternalLinks would write for a link with index
	// testIfindex and addresses node and node6.
	if err := p.tcObjs.KilnLinks.Put(uint32(testIfindex), tcLinkCfg{Snat4: addrWords(node)[3], Snat6: addrWords(node6)}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{node, node6} {
		if err := p.tcObjs.KilnNodeAddrs.Put(tcNodeAddr{Addr: addrWords(a)}, uint32(testIfindex)); err != nil {
			t.Fatal(err)
		}
	}
	err := p.Sync([]Service{
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.1"), 80, TCP}, Backends: []netip.AddrPort{remote}, NodePort: 30080},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.1"), 53, UDP}, Backends: []netip.AddrPort{remote}, NodePort: 30053},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.2"), 80, TCP}, Backends: []netip.AddrPort{localBE},
			LocalBackends: []netip.AddrPort{localBE}, ExternalIPs: []netip.Addr{extIP}, LoadBalancerIPs: []netip.Addr{lbIP}},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.3"), 80, TCP}, Backends: []netip.AddrPort{remote, localBE, remote2},
			LocalBackends: []netip.AddrPort{localBE}, NodePort: 30081, ExternalPolicy: PolicyLocal},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.4"), 80, TCP}, Backends: []netip.AddrPort{remote},
			NodePort: 30082, ExternalPolicy: PolicyLocal},
		{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.5"), 80, TCP}, Backends: []netip.AddrPort{remote, remote2},
			NodePort: 30083, Affinity: time.Hour},

		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::1"), 80, TCP}, Backends: []netip.AddrPort{remote6}, NodePort: 30080},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::1"), 53, UDP}, Backends: []netip.AddrPort{remote6}, NodePort: 30053},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::2"), 80, TCP}, Backends: []netip.AddrPort{localBE6},
			LocalBackends: []netip.AddrPort{localBE6}, ExternalIPs: []netip.Addr{extIP6}, LoadBalancerIPs: []netip.Addr{lbIP6}},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::3"), 80, TCP}, Backends: []netip.AddrPort{remote6, localBE6, remote6b},
			LocalBackends: []netip.AddrPort{localBE6}, NodePort: 30081, ExternalPolicy: PolicyLocal},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::4"), 80, TCP}, Backends: []netip.AddrPort{remote6},
			NodePort: 30082, ExternalPolicy: PolicyLocal},
		{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::5"), 80, TCP}, Backends: []netip.AddrPort{remote6, remote6b},
			NodePort: 30083, Affinity: time.Hour},
	})
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}

	type step struct {
		name    string
		prog    *ebpf.Program
		in      pkt
		wantRet []uint32 // any of
		want    pkt      // zero: the packet must come out unchanged
	}
	pass := []uint32{tcxPass}
	forwarded := []uint32{tcxPass, tcxRedirect}
	cport := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(client.Addr(), port) }
	steps := []step{
		{"tcp nodeport: DNAT to the remote backend, SNAT to the node", ingress,
			pkt{Proto: TCP, Src: client, Dst: frontend(30080), Payload: "hello"}, forwarded,
			pkt{Proto: TCP, Src: netip.AddrPortFrom(node, client.Port()), Dst: remote, Payload: "hello"}},
		{"tcp nodeport: the same flow again", ingress,
			pkt{Proto: TCP, Src: client, Dst: frontend(30080), Payload: "more"}, forwarded,
			pkt{Proto: TCP, Src: netip.AddrPortFrom(node, client.Port()), Dst: remote, Payload: "more"}},
		{"tcp nodeport: the reply, reverse NAT at ingress", ingress,
			pkt{Proto: TCP, Src: remote, Dst: netip.AddrPortFrom(node, client.Port()), Payload: "world"}, forwarded,
			pkt{Proto: TCP, Src: frontend(30080), Dst: client, Payload: "world"}},
		{"udp nodeport: DNAT and SNAT", ingress,
			pkt{Proto: UDP, Src: cport(40001), Dst: frontend(30053), Payload: "q"}, forwarded,
			pkt{Proto: UDP, Src: netip.AddrPortFrom(node, 40001), Dst: remote, Payload: "q"}},
		{"udp nodeport: the reply", ingress,
			pkt{Proto: UDP, Src: remote, Dst: netip.AddrPortFrom(node, 40001), Payload: "answer"}, forwarded,
			pkt{Proto: UDP, Src: frontend(30053), Dst: cport(40001), Payload: "answer"}},
		{"udp without checksum keeps none", ingress,
			pkt{Proto: UDP, Src: cport(40002), Dst: frontend(30053), Payload: "q", NoCsum: true}, forwarded,
			pkt{Proto: UDP, Src: netip.AddrPortFrom(node, 40002), Dst: remote, Payload: "q", NoCsum: true}},
		{"externalIP to a local backend: DNAT only", ingress,
			pkt{Proto: TCP, Src: cport(40003), Dst: netip.AddrPortFrom(extIP, 80)}, pass,
			pkt{Proto: TCP, Src: cport(40003), Dst: localBE}},
		{"externalIP: the local backend's reply, reverse NAT at egress", egress,
			pkt{Proto: TCP, Src: localBE, Dst: cport(40003), Payload: "hi"}, pass,
			pkt{Proto: TCP, Src: netip.AddrPortFrom(extIP, 80), Dst: cport(40003), Payload: "hi"}},
		{"externalIP: the local backend's reply coming in on an external link passes untouched", ingress,
			pkt{Proto: TCP, Src: localBE, Dst: cport(40003), Payload: "hi"}, []uint32{tcxNext}, pkt{}},
		{"load balancer IP", ingress,
			pkt{Proto: TCP, Src: cport(40004), Dst: netip.AddrPortFrom(lbIP, 80)}, pass,
			pkt{Proto: TCP, Src: cport(40004), Dst: localBE}},
		{"local policy without a local backend drops", ingress,
			pkt{Proto: TCP, Src: cport(40005), Dst: frontend(30082)}, []uint32{tcxDrop}, pkt{}},
		{"unknown port passes untouched", ingress,
			pkt{Proto: TCP, Src: cport(40006), Dst: frontend(31999)}, []uint32{tcxNext}, pkt{}},
		{"nodeport on an address that is not the node's passes untouched", ingress,
			pkt{Proto: TCP, Src: cport(40007), Dst: netip.AddrPortFrom(other, 30080)}, []uint32{tcxNext}, pkt{}},
		{"egress without a flow passes untouched", egress,
			pkt{Proto: UDP, Src: frontend(5353), Dst: cport(40008), Payload: "x"}, []uint32{tcxNext}, pkt{}},
	}
	cport6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(client6.Addr(), port) }
	snat6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node6, port) }
	steps = append(steps, []step{
		{"ipv6 tcp nodeport: DNAT to the remote backend, SNAT to the node", ingress,
			pkt{Proto: TCP, Src: client6, Dst: frontend6(30080), Payload: "hello"}, forwarded,
			pkt{Proto: TCP, Src: snat6(client6.Port()), Dst: remote6, Payload: "hello"}},
		{"ipv6 tcp nodeport: the same flow again", ingress,
			pkt{Proto: TCP, Src: client6, Dst: frontend6(30080), Payload: "more"}, forwarded,
			pkt{Proto: TCP, Src: snat6(client6.Port()), Dst: remote6, Payload: "more"}},
		{"ipv6 tcp nodeport: the reply, reverse NAT at ingress", ingress,
			pkt{Proto: TCP, Src: remote6, Dst: snat6(client6.Port()), Payload: "world"}, forwarded,
			pkt{Proto: TCP, Src: frontend6(30080), Dst: client6, Payload: "world"}},
		{"ipv6 the IPv4 flow of the same ports is another flow", ingress,
			pkt{Proto: TCP, Src: client, Dst: frontend(30080), Payload: "v4"}, forwarded,
			pkt{Proto: TCP, Src: netip.AddrPortFrom(node, client.Port()), Dst: remote, Payload: "v4"}},
		{"ipv6 udp nodeport: DNAT and SNAT", ingress,
			pkt{Proto: UDP, Src: cport6(40001), Dst: frontend6(30053), Payload: "q"}, forwarded,
			pkt{Proto: UDP, Src: snat6(40001), Dst: remote6, Payload: "q"}},
		{"ipv6 udp nodeport: the reply", ingress,
			pkt{Proto: UDP, Src: remote6, Dst: snat6(40001), Payload: "answer"}, forwarded,
			pkt{Proto: UDP, Src: frontend6(30053), Dst: cport6(40001), Payload: "answer"}},
		{"ipv6 udp: a checksum that comes out 0 is sent as 0xffff", ingress,
			pkt{Proto: UDP, Src: cport6(40002), Dst: frontend6(30053), Payload: zeroSumPayload(snat6(40002), remote6)}, forwarded,
			pkt{Proto: UDP, Src: snat6(40002), Dst: remote6, Payload: zeroSumPayload(snat6(40002), remote6)}},
		{"ipv6 externalIP to a local backend: DNAT only", ingress,
			pkt{Proto: TCP, Src: cport6(40003), Dst: netip.AddrPortFrom(extIP6, 80)}, pass,
			pkt{Proto: TCP, Src: cport6(40003), Dst: localBE6}},
		{"ipv6 externalIP: the local backend's reply, reverse NAT at egress", egress,
			pkt{Proto: TCP, Src: localBE6, Dst: cport6(40003), Payload: "hi"}, pass,
			pkt{Proto: TCP, Src: netip.AddrPortFrom(extIP6, 80), Dst: cport6(40003), Payload: "hi"}},
		{"ipv6 externalIP: the local backend's reply coming in on an external link passes untouched", ingress,
			pkt{Proto: TCP, Src: localBE6, Dst: cport6(40003), Payload: "hi"}, []uint32{tcxNext}, pkt{}},
		{"ipv6 load balancer IP", ingress,
			pkt{Proto: TCP, Src: cport6(40004), Dst: netip.AddrPortFrom(lbIP6, 80)}, pass,
			pkt{Proto: TCP, Src: cport6(40004), Dst: localBE6}},
		{"ipv6 local policy without a local backend drops", ingress,
			pkt{Proto: TCP, Src: cport6(40005), Dst: frontend6(30082)}, []uint32{tcxDrop}, pkt{}},
		{"ipv6 unknown port passes untouched", ingress,
			pkt{Proto: TCP, Src: cport6(40006), Dst: frontend6(31999)}, []uint32{tcxNext}, pkt{}},
		{"ipv6 nodeport on an address that is not the node's passes untouched", ingress,
			pkt{Proto: TCP, Src: cport6(40007), Dst: netip.AddrPortFrom(other6, 30080)}, []uint32{tcxNext}, pkt{}},
		{"ipv6 with an extension header passes untouched", ingress,
			pkt{Proto: TCP, Src: cport6(40008), Dst: frontend6(30080), ExtHdr: true}, []uint32{tcxNext}, pkt{}},
		{"ipv6 egress without a flow passes untouched", egress,
			pkt{Proto: UDP, Src: frontend6(5353), Dst: cport6(40009), Payload: "x"}, []uint32{tcxNext}, pkt{}},
	}...)
	// Local policy: whichever the client port, only the local backend, and the
	// client's address is kept.
	for i := range 20 {
		c := cport(41000 + uint16(i))
		steps = append(steps, step{fmt.Sprintf("local policy %d", i), ingress,
			pkt{Proto: TCP, Src: c, Dst: frontend(30081)}, pass, pkt{Proto: TCP, Src: c, Dst: localBE}})
		c6 := cport6(41000 + uint16(i))
		steps = append(steps, step{fmt.Sprintf("ipv6 local policy %d", i), ingress,
			pkt{Proto: TCP, Src: c6, Dst: frontend6(30081)}, pass, pkt{Proto: TCP, Src: c6, Dst: localBE6}})
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			in := st.in.build()
			ret, out := run(t, st.prog, testIfindex, in)
			okRet := false
			for _, r := range st.wantRet {
				okRet = okRet || r == ret
			}
			if !okRet {
				t.Errorf("verdict %d, want one of %v", int32(ret), st.wantRet)
			}
			if st.want == (pkt{}) {
				if diff := cmp.Diff(in, out); diff != "" && ret != tcxDrop {
					t.Errorf("packet changed (-in +out):\n%s", diff)
				}
				return
			}
			if len(out) != len(in) {
				t.Fatalf("packet length %d, want %d", len(out), len(in))
			}
			if diff := cmp.Diff(st.want, parse(t, out), cmpServices); diff != "" {
				t.Errorf("packet (-want +got):\n%s", diff)
			}
			// The program's checksums equal a full rebuild of the expected packet.
			if diff := cmp.Diff(st.want.build()[14:], out[14:]); diff != "" {
				t.Errorf("bytes differ from a packet built with the expected addresses (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("icmp errors", func(t *testing.T) {
		// ICMP errors about translated flows are translated like the flows'
		// packets: the embedded packet turned into what the other side sent,
		// the error sent to that side. Each family's flows have their own
		// client ports.
		type family struct {
			name                 string
			node, client, router netip.Addr // router: on the backends' side
			remote, localBE      netip.AddrPort
			extIP, other         netip.Addr
			fe                   func(uint16) netip.AddrPort
			tooBig               icmpErr // Type, Code and Info of "fragmentation needed" / Packet Too Big
			portUnreach, echo    icmpErr
		}
		fams := []family{
			{"ipv4", node, client.Addr(), netip.MustParseAddr("10.2.0.254"), remote, localBE, extIP, other, frontend,
				icmpErr{Type: icmpUnreach, Code: icmpCodeFragNeeded, Info: 1400},
				icmpErr{Type: icmpUnreach, Code: icmpCodePort}, icmpErr{Type: icmpEcho, Info: 0x00010001}},
			{"ipv6", node6, client6.Addr(), netip.MustParseAddr("fd00:2::fe"), remote6, localBE6, extIP6, other6, frontend6,
				icmpErr{Type: icmpv6TooBig, Info: 1400},
				icmpErr{Type: icmpv6Unreach, Code: icmpv6CodePort}, icmpErr{Type: icmpv6EchoRequest, Info: 0x00010001}},
		}
		for _, f := range fams {
			ap := netip.AddrPortFrom
			msg := func(kind icmpErr, src, dst netip.Addr, about pkt, quote int) icmpErr {
				kind.Src, kind.Dst, kind.About, kind.Quote = src, dst, about, quote
				return kind
			}
			// The node's packet to the remote backend of a TCP NodePort
			// flow, and what the client sent.
			toBE := pkt{Proto: TCP, Src: ap(f.node, 43000), Dst: f.remote, Payload: "big data", TCPFlags: tcpACK}
			fromClient := pkt{Proto: TCP, Src: ap(f.client, 43000), Dst: f.fe(30080), Payload: "big data", TCPFlags: tcpACK}
			// A UDP NodePort flow's reply to the client, and what the backend sent.
			toClient := pkt{Proto: UDP, Src: f.fe(30053), Dst: ap(f.client, 43001), Payload: "answer"}
			fromBE := pkt{Proto: UDP, Src: f.remote, Dst: ap(f.node, 43001), Payload: "answer"}
			// A local backend's flow (externalIP, DNAT only): what the node
			// forwards to the backend, and what the client sent.
			toLocal := pkt{Proto: TCP, Src: ap(f.client, 43002), Dst: f.localBE, Payload: "big", TCPFlags: tcpACK}
			fromClientLocal := pkt{Proto: TCP, Src: ap(f.client, 43002), Dst: ap(f.extIP, 80), Payload: "big", TCPFlags: tcpACK}
			for _, setup := range []pkt{
				{Proto: TCP, Src: fromClient.Src, Dst: fromClient.Dst},
				{Proto: UDP, Src: toClient.Dst, Dst: toClient.Src, Payload: "q"},
				{Proto: TCP, Src: fromClientLocal.Src, Dst: fromClientLocal.Dst},
			} {
				if ret, _ := run(t, ingress, testIfindex, setup.build()); ret != tcxPass && ret != tcxRedirect {
					t.Fatalf("%s: new flow %s -> %s: verdict %d", f.name, setup.Src, setup.Dst, int32(ret))
				}
			}
			cases := []struct {
				name    string
				prog    *ebpf.Program
				in      icmpErr
				wantRet []uint32
				want    icmpErr // zero: the packet must come out unchanged
			}{
				{"too big from a router about the node's packet to the backend goes to the client, from the frontend", ingress,
					msg(f.tooBig, f.router, f.node, toBE, 0), forwarded,
					msg(f.tooBig, f.fe(30080).Addr(), f.client, fromClient, 0)},
				{"the same with only 8 bytes of TCP quoted", ingress,
					msg(f.tooBig, f.router, f.node, toBE, 8), forwarded,
					msg(f.tooBig, f.fe(30080).Addr(), f.client, fromClient, 8)},
				{"port unreachable about a reply goes to the backend, from the node", ingress,
					msg(f.portUnreach, f.client, f.fe(30053).Addr(), toClient, 0), forwarded,
					msg(f.portUnreach, f.node, f.remote.Addr(), fromBE, 0)},
				{"egress: too big from the node about a packet to a local backend goes out from the frontend", egress,
					msg(f.tooBig, f.node, f.client, toLocal, 0), pass,
					msg(f.tooBig, f.extIP, f.client, fromClientLocal, 0)},
				{"an error about a local backend's flow coming in on an external link passes untouched", ingress,
					msg(f.tooBig, f.router, f.client, toLocal, 0), []uint32{tcxNext}, icmpErr{}},
				{"an error about no flow passes untouched", ingress,
					msg(f.tooBig, f.router, f.node, pkt{Proto: TCP, Src: ap(f.node, 43999), Dst: f.remote, TCPFlags: tcpACK}, 0),
					[]uint32{tcxNext}, icmpErr{}},
				{"an error not addressed to the embedded packet's source passes untouched", ingress,
					msg(f.tooBig, f.router, f.other, toBE, 0), []uint32{tcxNext}, icmpErr{}},
				{"an echo request passes untouched", ingress,
					msg(f.echo, f.router, f.node, toBE, 0), []uint32{tcxNext}, icmpErr{}},
			}
			if f.name == "ipv4" {
				noCsum, noCsumBE := toClient, fromBE
				noCsum.NoCsum, noCsumBE.NoCsum = true, true
				cases = append(cases, []struct {
					name    string
					prog    *ebpf.Program
					in      icmpErr
					wantRet []uint32
					want    icmpErr
				}{
					{"an embedded UDP packet without a checksum keeps none", ingress,
						msg(f.portUnreach, f.client, f.fe(30053).Addr(), noCsum, 0), forwarded,
						msg(f.portUnreach, f.node, f.remote.Addr(), noCsumBE, 0)},
				}...)
			}
			for _, c := range cases {
				t.Run(f.name+" "+c.name, func(t *testing.T) {
					in := c.in.build()
					ret, out := run(t, c.prog, testIfindex, in)
					if !slices.Contains(c.wantRet, ret) {
						t.Errorf("verdict %d, want one of %v", int32(ret), c.wantRet)
					}
					if c.want.Type == 0 && c.want.Src == (netip.Addr{}) {
						if diff := cmp.Diff(in, out); diff != "" {
							t.Errorf("packet changed (-in +out):\n%s", diff)
						}
						return
					}
					if len(out) != len(in) {
						t.Fatalf("packet length %d, want %d", len(out), len(in))
					}
					if diff := cmp.Diff(c.want.seen(), parseICMP(t, out), cmpServices); diff != "" {
						t.Errorf("ICMP error (-want +got):\n%s", diff)
					}
					if diff := cmp.Diff(c.want.build()[14:], out[14:]); diff != "" {
						t.Errorf("bytes differ from an error built with the expected addresses (-want +got):\n%s", diff)
					}
				})
			}
		}
	})

	t.Run("snat port clash picks another port", func(t *testing.T) {
		// A second client with the same source port, to the same backend:
		// the node's side of it needs another port.
		c2 := netip.MustParseAddrPort("192.0.2.11:40000")
		ret, out := run(t, ingress, testIfindex, pkt{Proto: TCP, Src: c2, Dst: frontend(30080)}.build())
		if ret != tcxPass && ret != tcxRedirect {
			t.Fatalf("verdict %d", int32(ret))
		}
		got := parse(t, out)
		if got.Src.Addr() != node || got.Src.Port() == client.Port() || got.Dst != remote {
			t.Fatalf("second client's packet became %s -> %s, want %s:<not %d> -> %s", got.Src, got.Dst, node, client.Port(), remote)
		}
		// Its reply goes back to it, the first client's to the first.
		_, out = run(t, ingress, testIfindex, pkt{Proto: TCP, Src: remote, Dst: got.Src}.build())
		if r := parse(t, out); r.Src != frontend(30080) || r.Dst != c2 {
			t.Errorf("second reply became %s -> %s, want %s -> %s", r.Src, r.Dst, frontend(30080), c2)
		}
		_, out = run(t, ingress, testIfindex, pkt{Proto: TCP, Src: remote, Dst: netip.AddrPortFrom(node, client.Port())}.build())
		if r := parse(t, out); r.Src != frontend(30080) || r.Dst != client {
			t.Errorf("first reply became %s -> %s, want %s -> %s", r.Src, r.Dst, frontend(30080), client)
		}
	})

	// The flows below have a Service of their own, whose backend moves from
	// remote to remote2 (and the IPv6 twins) while remote stays in the
	// backends map (other Services have it): a flow's packets keep going to
	// remote until the flow has ended.
	ending := Service{ServiceKey: ServiceKey{netip.MustParseAddr("10.96.0.6"), 80, TCP}, NodePort: 30084}
	ending6 := Service{ServiceKey: ServiceKey{netip.MustParseAddr("fd00:96::6"), 80, TCP}, NodePort: 30084}
	t.Run("tcp flows end with an RST or a FIN each way", func(t *testing.T) {
		for _, c := range []struct {
			name      string
			client    netip.AddrPort
			fe        netip.AddrPort
			svc       Service
			from, to  netip.AddrPort
			node      netip.Addr
			endsWith  []pkt // after the first SYN; nil Src/Dst: from the client, to the frontend
			fromBE    []bool
			stillOpen int // packets of endsWith after which a SYN still follows the flow
		}{
			{"rst from the client", netip.MustParseAddrPort("192.0.2.30:41000"), frontend(30084), ending, remote, remote2, node,
				[]pkt{{TCPFlags: tcpRST | tcpACK}}, []bool{false}, 0},
			{"rst from the backend", netip.MustParseAddrPort("192.0.2.30:41001"), frontend(30084), ending, remote, remote2, node,
				[]pkt{{TCPFlags: tcpRST | tcpACK}}, []bool{true}, 0},
			{"fin each way", netip.MustParseAddrPort("192.0.2.30:41002"), frontend(30084), ending, remote, remote2, node,
				[]pkt{{TCPFlags: tcpFIN | tcpACK}, {TCPFlags: tcpFIN | tcpACK}}, []bool{false, true}, 1},
			{"ipv6 rst from the client", netip.MustParseAddrPort("[2001:db8::30]:41000"), frontend6(30084), ending6, remote6, remote6b, node6,
				[]pkt{{TCPFlags: tcpRST | tcpACK}}, []bool{false}, 0},
			{"ipv6 fin each way", netip.MustParseAddrPort("[2001:db8::30]:41002"), frontend6(30084), ending6, remote6, remote6b, node6,
				[]pkt{{TCPFlags: tcpFIN | tcpACK}, {TCPFlags: tcpFIN | tcpACK}}, []bool{true, false}, 1},
		} {
			t.Run(c.name, func(t *testing.T) {
				svc := c.svc
				svc.Backends = []netip.AddrPort{c.from}
				if err := p.Upsert(svc); err != nil {
					t.Fatal(err)
				}
				send := func(what string, in pkt, wantSrc, wantDst netip.AddrPort) {
					t.Helper()
					ret, out := run(t, ingress, testIfindex, in.build())
					if ret != tcxPass && ret != tcxRedirect {
						t.Fatalf("%s: verdict %d", what, int32(ret))
					}
					got := parse(t, out)
					if got.Src != wantSrc || got.Dst != wantDst {
						t.Fatalf("%s: %s -> %s became %s -> %s, want %s -> %s", what, in.Src, in.Dst, got.Src, got.Dst, wantSrc, wantDst)
					}
				}
				syn := pkt{Proto: TCP, Src: c.client, Dst: c.fe}
				nodeSide := netip.AddrPortFrom(c.node, c.client.Port())
				send("first SYN", syn, nodeSide, c.from)
				svc.Backends = []netip.AddrPort{c.to}
				if err := p.Upsert(svc); err != nil {
					t.Fatal(err)
				}
				send("SYN again before the end", syn, nodeSide, c.from)
				for i, e := range c.endsWith {
					e.Proto = TCP
					if c.fromBE[i] {
						e.Src, e.Dst = c.from, nodeSide
						send(fmt.Sprintf("packet %d (flags %#x) from the backend", i+1, e.TCPFlags), e, c.fe, c.client)
					} else {
						e.Src, e.Dst = c.client, c.fe
						send(fmt.Sprintf("packet %d (flags %#x) from the client", i+1, e.TCPFlags), e, nodeSide, c.from)
					}
					if i+1 == c.stillOpen {
						send("SYN after one FIN", syn, nodeSide, c.from)
					}
				}
				// A new connection with the ended one's tuple picks anew;
				// the node's port is free again (the old flow's entry for it
				// is closed, and no other flow has it).
				ret, out := run(t, ingress, testIfindex, syn.build())
				if ret != tcxPass && ret != tcxRedirect {
					t.Fatalf("SYN after the end: verdict %d", int32(ret))
				}
				if got := parse(t, out); got.Dst != c.to || got.Src.Addr() != c.node {
					t.Fatalf("SYN after the end became %s -> %s, want %s:<port> -> %s", got.Src, got.Dst, c.node, c.to)
				} else {
					send("the new flow's reply", pkt{Proto: TCP, Src: c.to, Dst: got.Src, TCPFlags: tcpSYN | tcpACK}, c.fe, c.client)
				}
			})
		}
	})

	t.Run("client affinity", func(t *testing.T) {
		// Every connection of a client goes to one backend, IPv4 and IPv6
		// alike, and the affinity entry names the client's address.
		for _, c := range []struct {
			client netip.AddrPort
			fe     netip.AddrPort
			want   []netip.AddrPort
		}{
			{netip.MustParseAddrPort("192.0.2.20:42000"), frontend(30083), []netip.AddrPort{remote, remote2}},
			{netip.MustParseAddrPort("[2001:db8::20]:42000"), frontend6(30083), []netip.AddrPort{remote6, remote6b}},
		} {
			var first netip.AddrPort
			for i := range 10 {
				src := netip.AddrPortFrom(c.client.Addr(), c.client.Port()+uint16(i))
				ret, out := run(t, ingress, testIfindex, pkt{Proto: TCP, Src: src, Dst: c.fe}.build())
				if ret != tcxPass && ret != tcxRedirect {
					t.Fatalf("%s: verdict %d", src, int32(ret))
				}
				got := parse(t, out)
				if i == 0 {
					first = got.Dst
				}
				if got.Dst != first || (got.Dst != c.want[0] && got.Dst != c.want[1]) {
					t.Fatalf("%s -> %s went to %s, want %s (the client's first backend, one of %v)", src, c.fe, got.Dst, first, c.want)
				}
			}
			var k tcTcAffinityKey
			var v tcAffinityVal
			found := false
			it := p.tcObjs.KilnTcAffinity.Iterate()
			for it.Next(&k, &v) {
				found = found || k.Client == addrWords(c.client.Addr())
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
			if !found {
				t.Errorf("no affinity entry for client %s", c.client.Addr())
			}
		}
	})

	t.Run("deleted frontend stops translating", func(t *testing.T) {
		if err := p.Delete(ServiceKey{netip.MustParseAddr("10.96.0.1"), 80, TCP}); err != nil {
			t.Fatal(err)
		}
		in := pkt{Proto: TCP, Src: client, Dst: frontend(30080)}.build()
		ret, out := run(t, ingress, testIfindex, in)
		if ret != tcxNext {
			t.Errorf("verdict %d, want TCX_NEXT", int32(ret))
		}
		if diff := cmp.Diff(in, out); diff != "" {
			t.Errorf("packet changed (-in +out):\n%s", diff)
		}
	})

	t.Run("closed flows' node ports are taken when no fresh one is left", func(t *testing.T) {
		// Every node port towards remote in use by another flow: reverse
		// entries for the whole SNAT range, the client's port among them.
		// Last: it overwrites the entries of earlier flows to remote.
		svc := ending
		svc.Backends = []netip.AddrPort{remote}
		if err := p.Upsert(svc); err != nil {
			t.Fatal(err)
		}
		c3 := netip.MustParseAddrPort("192.0.2.31:41100") // its port is in the SNAT range
		var keys []tcCtKey
		var vals []tcCtVal
		for _, port := range portRange(snatPortMin, snatPortMin+snatPortRange) {
			keys = append(keys, tcCtKey{Saddr: addrWords(remote.Addr())[3], Daddr: addrWords(node)[3], Sport: portNet(remote.Port()),
				Dport: portNet(port), Proto: uint8(TCP), Dir: 1})
			vals = append(vals, tcCtVal{Saddr: addrWords(node)[3], Daddr: addrWords(other)[3], Sport: portNet(30084), Dport: portNet(port), Flags: 1})
		}
		ct := p.tcObjs.KilnCt
		if _, err := ct.BatchUpdate(keys, vals, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ct.BatchDelete(keys, nil) })
		if ret, _ := run(t, ingress, testIfindex, pkt{Proto: TCP, Src: c3, Dst: frontend(30084)}.build()); ret != tcxDrop {
			t.Fatalf("SYN with every node port taken by open flows: verdict %d, want drop", int32(ret))
		}
		for i := range vals {
			vals[i].Flags |= 1 << 2 // CT_F_CLOSED
		}
		if _, err := ct.BatchUpdate(keys, vals, nil); err != nil {
			t.Fatal(err)
		}
		ret, out := run(t, ingress, testIfindex, pkt{Proto: TCP, Src: c3, Dst: frontend(30084)}.build())
		if ret != tcxPass && ret != tcxRedirect {
			t.Fatalf("SYN with every node port taken by closed flows: verdict %d", int32(ret))
		}
		got := parse(t, out)
		if got.Dst != remote || got.Src.Addr() != node {
			t.Fatalf("SYN became %s -> %s, want %s:<port> -> %s", got.Src, got.Dst, node, remote)
		}
		_, out = run(t, ingress, testIfindex, pkt{Proto: TCP, Src: remote, Dst: got.Src, TCPFlags: tcpSYN | tcpACK}.build())
		if r := parse(t, out); r.Src != frontend(30084) || r.Dst != c3 {
			t.Errorf("reply became %s -> %s, want %s -> %s", r.Src, r.Dst, frontend(30084), c3)
		}
	})

}

// zeroSumPayload is a 2-byte UDP payload that makes the checksum of a datagram from
// src to dst with it come out 0 (sent as 0xffff): the checksum with a zero payload,
// added to the sum, makes it 0xffff.
func zeroSumPayload(src, dst netip.AddrPort) string {
	b := pkt{Proto: UDP, Src: src, Dst: dst, Payload: "\x00\x00"}.build()
	return string(b[len(b)-4 : len(b)-2]) // the UDP checksum field
}

// TestOpenUpgradesLayout2 opens a pin directory as layout 2 left it: the
// configuration maps as they are now, kiln_links without IPv6 SNAT sources,
// kiln_tc_affinity keyed by a 4-byte client and no kiln_ct6. cilium/ebpf refuses a
// pinned map whose key or value size changed, so Open must replace those two, and
// keep what still fits: the services (no Sync needed) and the IPv4 conntrack
// entries of established flows.
func TestOpenUpgradesLayout2(t *testing.T) {
	s := newSandbox(t)
	p := openProxy(t, s)
	want := []Service{{ServiceKey: ServiceKey{vip4, 80, TCP}, Backends: []netip.AddrPort{netip.MustParseAddrPort("10.2.0.2:8080")}, NodePort: 30080}}
	if err := p.Sync(want); err != nil {
		t.Fatal(err)
	}
	flow := tcCtKey{Saddr: addrWords(netip.MustParseAddr("10.2.0.2"))[3], Daddr: addrWords(netip.MustParseAddr("10.1.0.1"))[3],
		Sport: portNet(8080), Dport: portNet(40000), Proto: uint8(TCP), Dir: 1}
	if err := p.tcObjs.KilnCt.Put(flow, tcCtVal{Flags: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// Back to layout 2.
	pin := func(name string) string { return filepath.Join(s.PinDir, name) }
	for _, spec := range []*ebpf.MapSpec{
		{Name: "kiln_links", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 256},
		{Name: "kiln_tc_affinity", Type: ebpf.LRUHash, KeySize: 8, ValueSize: 16, MaxEntries: DefaultLimits.AffinityEntries},
	} {
		if err := os.Remove(pin(spec.Name)); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(pin(spec.Name)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if err := os.Remove(pin("kiln_ct6")); err != nil {
		t.Fatal(err)
	}
	marker, err := ebpf.LoadPinnedMap(pin(layoutPin), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := marker.Put(uint32(0), uint32(2)); err != nil {
		t.Fatal(err)
	}
	marker.Close()

	p2 := openProxy(t, s)
	t.Cleanup(func() { p2.Remove() })
	if diff := cmp.Diff(want, p2.Services(), cmpServices); diff != "" {
		t.Errorf("adopted services (-want +got):\n%s", diff)
	}
	if got := p2.Stats().Frontends; got != 1 {
		t.Errorf("adopted %d frontends, want 1", got)
	}
	var v tcCtVal
	if err := p2.tcObjs.KilnCt.Lookup(flow, &v); err != nil || v.Flags != 1 {
		t.Errorf("IPv4 conntrack entry after the upgrade: %+v, %v; want it kept", v, err)
	}
	for _, m := range []struct {
		m        *ebpf.Map
		key, val uint32
	}{
		{p2.tcObjs.KilnLinks, 4, 24},
		{p2.tcObjs.KilnTcAffinity, 20, 16},
		{p2.tcObjs.KilnCt6, 40, 44},
	} {
		if m.m.KeySize() != m.key || m.m.ValueSize() != m.val {
			t.Errorf("%s: key %d, value %d bytes; want %d, %d", m.m, m.m.KeySize(), m.m.ValueSize(), m.key, m.val)
		}
	}
	if v, err := p2.pinnedLayout(); err != nil || v != layoutVersion {
		t.Errorf("pinned layout = %d, %v; want %d", v, err, layoutVersion)
	}
}

// The SNAT port range of bpf/tc.c.
const (
	snatPortMin   = 32768
	snatPortRange = 28232
)

// portRange is the ports from lo up to, not including, hi.
func portRange(lo, hi int) []uint16 {
	var out []uint16
	for p := lo; p < hi; p++ {
		out = append(out, uint16(p))
	}
	return out
}

// ICMP protocol numbers and the messages the tests send (RFC 792, RFC 4443).
const (
	ipProtoICMP   = 1
	ipProtoICMPv6 = 58
	icmpHeaderLen = 8 // type, code, checksum, 4 bytes of Info

	icmpUnreach        = 3 // destination unreachable
	icmpCodePort       = 3
	icmpCodeFragNeeded = 4
	icmpEcho           = 8
	icmpv6Unreach      = 1
	icmpv6CodePort     = 4
	icmpv6TooBig       = 2
	icmpv6EchoRequest  = 128
)

// icmpErr is an ICMP (IPv4) or ICMPv6 message (by the family of its addresses)
// whose body is the start of the packet About, as an error carries it.
type icmpErr struct {
	Src, Dst   netip.Addr // the outer header's
	Type, Code uint8
	Info       uint32 // the 4 bytes after the checksum: the MTU of "fragmentation needed" (low 16 bits) or Packet Too Big
	About      pkt    // the embedded packet
	Quote      int    // bytes of About's TCP/UDP header and payload carried; 0: all of them
}

// build makes the frame: About as pkt.build makes it (so with its checksums),
// cut to Quote, behind an ICMP header and an outer IP header with correct
// checksums.
func (e icmpErr) build() []byte {
	inner := e.About.build()[14:]
	ipLen := 20
	if e.About.Src.Addr().Is6() {
		ipLen = 40
	}
	if e.Quote > 0 {
		inner = inner[:ipLen+e.Quote]
	}
	msg := make([]byte, icmpHeaderLen, icmpHeaderLen+len(inner))
	msg[0], msg[1] = e.Type, e.Code
	binary.BigEndian.PutUint32(msg[4:], e.Info)
	msg = append(msg, inner...)

	if e.Src.Is6() {
		binary.BigEndian.PutUint16(msg[2:], csum(pseudo(e.Src, e.Dst, ipProtoICMPv6, len(msg)), msg))
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(msg)))
		ip[6] = ipProtoICMPv6
		ip[7] = 64
		s, d := e.Src.As16(), e.Dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		eth := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd}
		return append(append(eth, ip...), msg...)
	}
	binary.BigEndian.PutUint16(msg[2:], csum(msg))
	ip := make([]byte, 20)
	ip[0] = 0x45
	ip[1] = 0xc0 // internetwork control, as the kernel sends errors
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(msg)))
	binary.BigEndian.PutUint16(ip[4:], 0x4321)
	ip[8] = 64
	ip[9] = ipProtoICMP
	s, d := e.Src.As4(), e.Dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], csum(ip))
	eth := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
	return append(append(eth, ip...), msg...)
}

// parseICMP reads an ICMP error frame the program wrote back and checks every
// checksum in it against one computed from scratch: the outer IPv4 header's, the
// ICMP checksum (ICMPv6: with its pseudo header), the embedded IPv4 header's and,
// when the error carries the whole embedded packet, its TCP/UDP checksum.
func parseICMP(t *testing.T, b []byte) icmpErr {
	t.Helper()
	var (
		e   icmpErr
		msg []byte
	)
	if binary.BigEndian.Uint16(b[12:]) == 0x86dd {
		ip := b[14:54]
		msg = b[54:]
		if ip[6] != ipProtoICMPv6 {
			t.Fatalf("next header %d, want ICMPv6", ip[6])
		}
		e.Src = netip.AddrFrom16([16]byte(ip[8:24]))
		e.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
		if got, want := int(binary.BigEndian.Uint16(ip[4:])), len(msg); got != want {
			t.Errorf("IPv6 payload length %d, want %d", got, want)
		}
	} else {
		ip := b[14:34]
		msg = b[34:]
		if ip[9] != ipProtoICMP {
			t.Fatalf("protocol %d, want ICMP", ip[9])
		}
		e.Src = netip.AddrFrom4([4]byte(ip[12:16]))
		e.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
		checkIPv4Csum(t, "outer IPv4 header", ip)
	}
	e.Type, e.Code = msg[0], msg[1]
	e.Info = binary.BigEndian.Uint32(msg[4:])
	msgCopy := append([]byte(nil), msg...)
	msgCopy[2], msgCopy[3] = 0, 0
	want := csum(msgCopy)
	if e.Src.Is6() {
		want = csum(pseudo(e.Src, e.Dst, ipProtoICMPv6, len(msg)), msgCopy)
	}
	if got := binary.BigEndian.Uint16(msg[2:]); got != want {
		t.Errorf("ICMP checksum %#04x, want %#04x", got, want)
	}

	inner := msg[icmpHeaderLen:]
	var (
		ipLen, total int
		proto        Proto
		s, d         netip.Addr
	)
	if e.Src.Is6() {
		ipLen = 40
		total = 40 + int(binary.BigEndian.Uint16(inner[4:]))
		proto = Proto(inner[6])
		s = netip.AddrFrom16([16]byte(inner[8:24]))
		d = netip.AddrFrom16([16]byte(inner[24:40]))
	} else {
		ipLen = 20
		total = int(binary.BigEndian.Uint16(inner[2:]))
		proto = Proto(inner[9])
		s = netip.AddrFrom4([4]byte(inner[12:16]))
		d = netip.AddrFrom4([4]byte(inner[16:20]))
		checkIPv4Csum(t, "embedded IPv4 header", inner[:20])
	}
	if total == len(inner) {
		// The whole packet: its TCP/UDP checksum is checked from scratch.
		eth := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00}
		if e.Src.Is6() {
			eth[12], eth[13] = 0x86, 0xdd
		}
		e.About = parse(t, append(eth, inner...))
	} else {
		l4 := inner[ipLen:]
		e.Quote = len(l4)
		e.About = pkt{Proto: proto,
			Src: netip.AddrPortFrom(s, binary.BigEndian.Uint16(l4[0:])),
			Dst: netip.AddrPortFrom(d, binary.BigEndian.Uint16(l4[2:]))}
	}
	if proto == TCP && len(inner) > ipLen+13 {
		e.About.TCPFlags = inner[ipLen+13]
	}
	return e
}

// seen is e as parseICMP reads it back: without what a short quote leaves out.
func (e icmpErr) seen() icmpErr {
	if e.Quote > 0 {
		e.About.Payload = ""
		if e.About.Proto == TCP && e.Quote < 14 {
			e.About.TCPFlags = 0
		}
	}
	return e
}

// checkIPv4Csum checks the checksum of IPv4 header ip.
func checkIPv4Csum(t *testing.T, what string, ip []byte) {
	t.Helper()
	c := append([]byte(nil), ip...)
	c[10], c[11] = 0, 0
	if want, got := csum(c), binary.BigEndian.Uint16(ip[10:]); got != want {
		t.Errorf("%s checksum %#04x, want %#04x", what, got, want)
	}
}
