package timesync

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kiln-os/kiln/networking/netnstest"
)

// hang protects against deadlocks; it is not a timing assertion.
const hang = 30 * time.Second

// fakeClock is the local clock shifted by what Step added; it records what
// the Syncer asked for instead of touching the host's clock.
type fakeClock struct {
	mu    sync.Mutex
	shift time.Duration
	steps []time.Duration
	slews []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.shift)
}
func (c *fakeClock) Step(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shift += d
	c.steps = append(c.steps, d)
	return nil
}
func (c *fakeClock) Slew(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slews = append(c.slews, d)
	return nil
}

// serve answers SNTP on conn with the real time plus ahead, until it is closed.
func serve(conn net.PacketConn, ahead time.Duration) {
	buf := make([]byte, 512)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		now := time.Now().Add(ahead)
		resp, err := Answer(buf[:n], 2, now, now)
		if err != nil {
			continue
		}
		conn.WriteTo(resp, from)
	}
}

// checkStepThenSlew: a clock 10 s behind the server is stepped by about 10 s,
// then (now close) slewed; the status says so.
func checkStepThenSlew(t *testing.T, server string) {
	t.Helper()
	clk := &fakeClock{}
	s := &Syncer{Servers: []string{server}, Clock: clk, Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for i := range 2 {
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatalf("SyncOnce #%d: %v", i+1, err)
		}
	}
	if len(clk.steps) != 1 || clk.steps[0] < 9*time.Second || clk.steps[0] > 11*time.Second {
		t.Errorf("steps = %v, want one of about 10s", clk.steps)
	}
	if len(clk.slews) != 1 || clk.slews[0] > DefaultStepThreshold || clk.slews[0] < -DefaultStepThreshold {
		t.Errorf("slews = %v, want one within %s", clk.slews, DefaultStepThreshold)
	}
	st := s.Status()
	if !st.Synced || st.Steps != 1 || st.Slews != 1 || st.Stratum != 2 || st.Server != server || st.LastError != "" {
		t.Errorf("Status() = %+v", st)
	}
	if !s.WaitSync(ctx) {
		t.Error("WaitSync after a sync = false")
	}
}

// TestStepThenSlewLoopback runs against a responder on loopback (no root).
func TestStepThenSlewLoopback(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go serve(conn, 10*time.Second)
	checkStepThenSlew(t, conn.LocalAddr().String())
}

func TestUnreachableAndBadAnswers(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { // a kiss of death: stratum 0
		buf := make([]byte, 512)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			resp, _ := Answer(buf[:n], 0, time.Now(), time.Now())
			conn.WriteTo(resp, from)
		}
	}()
	clk := &fakeClock{}
	s := &Syncer{Servers: []string{conn.LocalAddr().String()}, Clock: clk}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.SyncOnce(context.Background()); err == nil {
		t.Error("SyncOnce accepted a kiss of death")
	}
	if st := s.Status(); st.Synced || st.LastError == "" {
		t.Errorf("Status() = %+v, want unsynced with an error", st)
	}
	if s.WaitSync(ctx) {
		t.Error("WaitSync = true without a sync")
	}
	if len(clk.steps)+len(clk.slews) != 0 {
		t.Errorf("the clock was changed: %+v", clk)
	}
}

func TestNTPTimestamps(t *testing.T) {
	for _, tm := range []time.Time{time.Unix(0, 0), time.Date(2026, 11, 28, 22, 0, 0, 123456789, time.UTC)} {
		if got := fromNTP(toNTP(tm)); got.Sub(tm).Abs() > time.Microsecond {
			t.Errorf("fromNTP(toNTP(%v)) = %v", tm, got)
		}
	}
}

// TestStepThenSlewInNetNS: the responder is in a peer network namespace at
// the other end of a veth pair.
func TestStepThenSlewInNetNS(t *testing.T) {
	if netnstest.InNetNS(t, "creates a veth pair with an NTP responder in a peer namespace") {
		return
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kilnt0"}, PeerName: "kilnt0p"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	peerNS := netnstest.PeerNS(t)
	peer, _ := netlink.LinkByName("kilnt0p")
	if err := netlink.LinkSetNsFd(peer, int(peerNS)); err != nil {
		t.Fatalf("move veth peer: %v", err)
	}
	setup := func(name, cidr string) {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		p := netip.MustParsePrefix(cidr)
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	setup("kilnt0", "192.0.2.2/24")
	var conn net.PacketConn
	netnstest.Do(t, peerNS, func() {
		setup("kilnt0p", "192.0.2.123/24")
		var err error
		if conn, err = net.ListenPacket("udp4", "192.0.2.123:123"); err != nil {
			t.Fatalf("NTP responder: %v", err)
		}
	})
	t.Cleanup(func() { conn.Close() })
	go serve(conn, 10*time.Second)
	checkStepThenSlew(t, "192.0.2.123")
}

func TestServiceFollowsServers(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go serve(conn, 10*time.Second)
	clk := &fakeClock{}
	s := &Service{Clock: clk}
	defer s.Close()
	if st := s.Status(); st.Enabled {
		t.Errorf("Status() before Apply = %+v, want disabled", st)
	}
	s.Apply([]string{conn.LocalAddr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if !s.WaitSync(ctx) {
		t.Fatal("no sync")
	}
	if st := s.Status(); !st.Enabled || !st.Synced || st.Steps != 1 {
		t.Errorf("Status() = %+v", st)
	}
	s.Apply(nil)
	if st := s.Status(); st.Enabled {
		t.Errorf("Status() after Apply(nil) = %+v, want disabled", st)
	}
}
