// Package timesync keeps the node's clock right: an SNTP client (RFC 4330)
// asks the configured servers for the time, steps the clock when it is far off
// and slews it (adjtimex) when it is close, and exposes its state; work that
// needs a right clock (certificate checks) waits for the first sync or a
// timeout. The clock is a seam, so tests check what would be done without
// touching the host's clock.
package timesync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// ntpEpochOffset is the number of seconds from 1900 (NTP) to 1970 (Unix).
const ntpEpochOffset = 2208988800

const packetSize = 48

// Response is one server's answer.
type Response struct {
	Server  string
	Offset  time.Duration // add to the local clock to get the server's
	Delay   time.Duration // round trip, less the server's processing
	Stratum uint8
	Leap    uint8
}

func toNTP(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

func fromNTP(v uint64) time.Time {
	secs := int64(v>>32) - ntpEpochOffset
	nanos := int64((v & 0xffffffff) * 1e9 >> 32)
	return time.Unix(secs, nanos)
}

// Query asks one server (host:port) for the time; now is the local clock.
func Query(ctx context.Context, server string, now func() time.Time) (Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", server)
	if err != nil {
		return Response{}, fmt.Errorf("sntp %s: %w", server, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)

	req := make([]byte, packetSize)
	req[0] = 0<<6 | 4<<3 | 3 // no leap warning, version 4, client mode
	t1 := now()
	binary.BigEndian.PutUint64(req[40:], toNTP(t1)) // transmit timestamp
	if _, err := conn.Write(req); err != nil {
		return Response{}, fmt.Errorf("sntp %s: %w", server, err)
	}
	resp := make([]byte, 128)
	n, err := conn.Read(resp)
	t4 := now()
	if err != nil {
		return Response{}, fmt.Errorf("sntp %s: %w", server, err)
	}
	return parse(server, req, resp[:n], t1, t4)
}

func parse(server string, req, resp []byte, t1, t4 time.Time) (Response, error) {
	if len(resp) < packetSize {
		return Response{}, fmt.Errorf("sntp %s: short answer (%d bytes)", server, len(resp))
	}
	leap, mode, stratum := resp[0]>>6, resp[0]&7, resp[1]
	switch {
	case mode != 4:
		return Response{}, fmt.Errorf("sntp %s: answer in mode %d, want 4 (server)", server, mode)
	case stratum == 0:
		return Response{}, fmt.Errorf("sntp %s: kiss of death %q", server, resp[12:16])
	case stratum > 15:
		return Response{}, fmt.Errorf("sntp %s: unsynchronised (stratum %d)", server, stratum)
	case leap == 3:
		return Response{}, fmt.Errorf("sntp %s: server clock not synchronised", server)
	case binary.BigEndian.Uint64(resp[24:]) != binary.BigEndian.Uint64(req[40:]):
		return Response{}, fmt.Errorf("sntp %s: answer to another request", server)
	}
	t2 := fromNTP(binary.BigEndian.Uint64(resp[32:])) // server receive
	t3 := fromNTP(binary.BigEndian.Uint64(resp[40:])) // server transmit
	offset := (t2.Sub(t1) + t3.Sub(t4)) / 2
	delay := t4.Sub(t1) - t3.Sub(t2)
	if delay < 0 {
		delay = 0
	}
	return Response{Server: server, Offset: offset, Delay: delay, Stratum: stratum, Leap: leap}, nil
}

// Answer builds a server's reply to req, received at recv and sent at xmit,
// for tests and for a node serving time to others.
func Answer(req []byte, stratum uint8, recv, xmit time.Time) ([]byte, error) {
	if len(req) < packetSize {
		return nil, errors.New("sntp: short request")
	}
	resp := make([]byte, packetSize)
	resp[0] = 0<<6 | 4<<3 | 4
	resp[1] = stratum
	resp[2] = req[2]
	resp[3] = 0xec // precision 2^-20
	copy(resp[12:16], "KILN")
	binary.BigEndian.PutUint64(resp[16:], toNTP(recv)) // reference time
	copy(resp[24:32], req[40:48])                      // origin = client's transmit
	binary.BigEndian.PutUint64(resp[32:], toNTP(recv))
	binary.BigEndian.PutUint64(resp[40:], toNTP(xmit))
	return resp, nil
}
