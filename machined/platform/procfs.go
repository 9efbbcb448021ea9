package platform

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/mounts.
type MountEntry struct {
	Source, Target, FSType string
	Options                []string
}

// ReadOnly reports whether the mount has the ro option.
func (m MountEntry) ReadOnly() bool {
	for _, o := range m.Options {
		if o == "ro" {
			return true
		}
	}
	return false
}

// Mounts reads /proc/mounts (or another file in that format).
func Mounts(path string) ([]MountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	defer f.Close()
	return ParseMounts(f)
}

// ParseMounts parses the /proc/mounts format, undoing the kernel's octal escapes.
func ParseMounts(r io.Reader) ([]MountEntry, error) {
	var out []MountEntry
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("mounts: malformed line %q", sc.Text())
		}
		out = append(out, MountEntry{Source: unescape(f[0]), Target: unescape(f[1]), FSType: f[2], Options: strings.Split(f[3], ",")})
	}
	return out, sc.Err()
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Socket is a listening TCP socket from /proc/net/tcp{,6}.
type Socket struct {
	Addr  netip.AddrPort
	Inode uint64
	UID   int
}

// Socket states in the st column of /proc/net/{tcp,udp}{,6}.
const (
	// tcpListen is TCP_LISTEN.
	tcpListen = "0A"
	// udpUnconnected is TCP_CLOSE on a UDP socket: one that receives from
	// anyone rather than one peer, what netstat -lu shows.
	udpUnconnected = "07"
)

// Listening returns the listening TCP sockets of procNet (normally /proc/net, which is
// the caller's network namespace), IPv4 then IPv6.
func Listening(procNet string) ([]Socket, error) {
	return readNetTables(procNet, "tcp", tcpListen)
}

// BoundUDP returns the unconnected (receiving) UDP sockets of procNet, IPv4
// then IPv6.
func BoundUDP(procNet string) ([]Socket, error) {
	return readNetTables(procNet, "udp", udpUnconnected)
}

// readNetTables reads procNet/proto and procNet/proto6 and keeps the
// sockets in state.
func readNetTables(procNet, proto, state string) ([]Socket, error) {
	var out []Socket
	for _, name := range []string{proto, proto + "6"} {
		f, err := os.Open(filepath.Join(procNet, name))
		if os.IsNotExist(err) && name != proto {
			continue // kernel without IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("%s sockets: %w", proto, err)
		}
		s, err := parseNetTable(f, state)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s sockets: %s: %w", proto, name, err)
		}
		out = append(out, s...)
	}
	return out, nil
}

// ParseNetTCP returns the listening sockets of a /proc/net/tcp or tcp6 file.
func ParseNetTCP(r io.Reader) ([]Socket, error) {
	return parseNetTable(r, tcpListen)
}

// ParseNetUDP returns the unconnected sockets of a /proc/net/udp or udp6 file.
func ParseNetUDP(r io.Reader) ([]Socket, error) {
	return parseNetTable(r, udpUnconnected)
}

// parseNetTable returns the sockets in state of a /proc/net socket table.
func parseNetTable(r io.Reader, state string) ([]Socket, error) {
	var out []Socket
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != state {
			continue
		}
		ap, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", sc.Text(), err)
		}
		uid, _ := strconv.Atoi(f[7])
		inode, _ := strconv.ParseUint(f[9], 10, 64)
		out = append(out, Socket{Addr: ap, Inode: inode, UID: uid})
	}
	return out, sc.Err()
}

// parseHexAddrPort decodes "0100007F:C350" (IPv4) or the 32-digit IPv6 form: the
// address is stored as host-order (little endian) 32-bit words.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
