package platform

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Process is one entry of /proc.
type Process struct {
	PID, PPID   int
	Name        string // comm
	CommandLine string // argv joined by spaces
	State       string // R, S, D, Z, ...
	RSSBytes    uint64
	// UserCPU and SystemCPU are the CPU time spent in user and in kernel mode
	// since the process started.
	UserCPU, SystemCPU time.Duration
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Kiln runs on).
const clockTick = 10 * time.Millisecond

// Processes lists the processes under proc (normally /proc), sorted by PID.
// A process that exits while it is read is left out.
func Processes(proc string) ([]Process, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, fmt.Errorf("processes: %w", err)
	}
	page := uint64(os.Getpagesize())
	var out []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // gone
		}
		p, err := ParseStat(stat)
		if err != nil {
			return nil, fmt.Errorf("processes: %s/stat: %w", dir, err)
		}
		p.PID = pid
		if statm, err := os.ReadFile(filepath.Join(dir, "statm")); err == nil {
			if f := strings.Fields(string(statm)); len(f) > 1 {
				pages, _ := strconv.ParseUint(f[1], 10, 64)
				p.RSSBytes = pages * page
			}
		}
		if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.CommandLine = strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// ParseStat reads the name, state, parent and CPU times of a /proc/PID/stat
// line. The name sits in parentheses and may itself hold spaces and
// parentheses, so it runs to the last ')'. A line cut short after the parent
// leaves the CPU times zero.
func ParseStat(stat []byte) (Process, error) {
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Process{}, fmt.Errorf("no (comm) in %q", s)
	}
	rest := strings.Fields(s[end+1:])
	if len(rest) < 2 {
		return Process{}, fmt.Errorf("short stat line %q", s)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return Process{}, fmt.Errorf("bad ppid in %q", s)
	}
	p := Process{Name: s[open+1 : end], State: rest[0], PPID: ppid}
	// utime and stime are fields 14 and 15 of the line: rest[11] and rest[12].
	if len(rest) > 12 {
		var err error
		if p.UserCPU, err = ticks(rest[11]); err != nil {
			return Process{}, fmt.Errorf("bad utime in %q", s)
		}
		if p.SystemCPU, err = ticks(rest[12]); err != nil {
			return Process{}, fmt.Errorf("bad stime in %q", s)
		}
	}
	return p, nil
}

// ticks converts a count of clock ticks from /proc to a duration.
func ticks(v string) (time.Duration, error) {
	n, err := strconv.ParseUint(v, 10, 63)
	return time.Duration(n) * clockTick, err
}
