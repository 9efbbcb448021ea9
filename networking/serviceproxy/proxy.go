//go:build linux

package serviceproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where a node pins the service proxy's maps and links.
const DefaultPinDir = "/sys/fs/bpf/kiln"

// Config says where the datapath lives.
type Config struct {
	// Cgroup is the cgroup v2 directory whose sockets (and its descendants')
	// are balanced: the cgroup2 root on a node. Required.
	Cgroup string
	// PinDir is a directory on a bpffs; created if missing. Default DefaultPinDir.
	PinDir string
	// Limits size the maps; zero fields take DefaultLimits.
	Limits Limits
	// Logger receives events; default discards them.
	Logger *slog.Logger
	// ExternalLinks are where NodePorts, externalIPs and LoadBalancer IPs are
	// served; SetExternalLinks changes them later. None serves no frontends.
	ExternalLinks []ExternalLink
	// ExternalLB is how a new flow through those frontends picks its backend:
	// ExternalRandom (the default) or ExternalMaglev, which every node must
	// agree on for a flow to keep its backend across nodes. Open applies it to
	// the pinned maps (writing or removing the Maglev tables).
	ExternalLB ExternalLB
}

// hook is one cgroup attach point and the program for it.
type hook struct {
	name   string // also the link's pin name
	attach ebpf.AttachType
	prog   func(*sockPrograms) *ebpf.Program
}

var hooks = []hook{
	{"link_connect4", ebpf.AttachCGroupInet4Connect, func(p *sockPrograms) *ebpf.Program { return p.KilnConnect4 }},
	{"link_connect6", ebpf.AttachCGroupInet6Connect, func(p *sockPrograms) *ebpf.Program { return p.KilnConnect6 }},
	{"link_sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.KilnSendmsg4 }},
	{"link_sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *sockPrograms) *ebpf.Program { return p.KilnSendmsg6 }},
	{"link_recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.KilnRecvmsg4 }},
	{"link_recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(p *sockPrograms) *ebpf.Program { return p.KilnRecvmsg6 }},
	{"link_getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *sockPrograms) *ebpf.Program { return p.KilnGetpeername4 }},
	{"link_getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *sockPrograms) *ebpf.Program { return p.KilnGetpeername6 }},
}

// Proxy is a loaded and attached datapath and the in-memory mirror of its maps. Its
// methods are safe for concurrent use.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	objs  sockObjects
	links []link.Link

	tcObjs  tcObjects
	tcLinks map[string]link.Link // by pin name

	mu  sync.Mutex
	tab *table
}

// Open loads the programs, adopts the maps pinned in cfg.PinDir (or creates and pins
// them), and attaches the programs to cfg.Cgroup: a link pinned there already is
// updated in place with link.Update, so the hooks are never empty; otherwise a new
// link is attached and pinned. The service state in the maps is read back, and
// entries no service can reach are removed.
func Open(cfg Config) (_ *Proxy, err error) {
	if cfg.Cgroup == "" {
		return nil, errors.New("serviceproxy: no cgroup to attach to")
	}
	if cfg.PinDir == "" {
		cfg.PinDir = DefaultPinDir
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.ExternalLB != ExternalRandom && cfg.ExternalLB != ExternalMaglev {
		return nil, fmt.Errorf("serviceproxy: unknown external load-balancing algorithm %s", cfg.ExternalLB)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "serviceproxy"), tcLinks: map[string]link.Link{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	if err := os.MkdirAll(cfg.PinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(cfg.PinDir, &fs); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", cfg.PinDir, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		return nil, fmt.Errorf("pin directory %s is not on a bpffs: mount -t bpf bpf %s", cfg.PinDir, filepath.Dir(cfg.PinDir))
	}
	cgID, err := cgroupID(cfg.Cgroup)
	if err != nil {
		return nil, err
	}

	// The TC object is parsed once: checkLayout compares pinned maps with its
	// specs before loadTC loads it.
	tcSpec, err := loadTc()
	if err != nil {
		return nil, fmt.Errorf("load TC BPF object: %w", err)
	}
	if err := p.checkLayout(tcSpec); err != nil {
		return nil, err
	}
	spec, err := loadSock()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	sizes := map[string]uint32{
		sockMapKilnServices: cfg.Limits.Services,
		sockMapKilnSlots:    cfg.Limits.Slots,
		sockMapKilnBackends: cfg.Limits.Backends + 1, // indexed by ID, 1..Backends
		sockMapKilnRevnat:   cfg.Limits.ReverseNAT,
		sockMapKilnAffinity: cfg.Limits.AffinityEntries,
	}
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	err = spec.LoadAndAssign(&p.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("maps pinned in %s do not fit these limits (remove the directory to resize, which drops the datapath): %w", cfg.PinDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load BPF programs and maps: %w", err)
	}

	if err := p.loadTC(tcSpec); err != nil {
		return nil, err
	}

	// The maps are read (and cleaned) before the new programs go live, so that a
	// program change lands on maps that follow the protocol.
	p.tab, err = newTableLB(&mapsDatapath{services: p.objs.KilnServices, slots: p.objs.KilnSlots,
		backends: p.objs.KilnBackends, frontends: p.tcObjs.KilnFrontends, maglev: p.tcObjs.KilnMaglev},
		cfg.Limits, cfg.ExternalLB, p.log)
	if err != nil {
		return nil, err
	}
	if err := p.pinLayout(); err != nil {
		return nil, err
	}
	if err := p.setExternalLinks(cfg.ExternalLinks); err != nil {
		return nil, err
	}

	for _, h := range hooks {
		l, err := p.attach(h, cgID)
		if err != nil {
			return nil, err
		}
		p.links = append(p.links, l)
	}
	return p, nil
}

// loadTC loads the TCX programs of spec (loadTc's) over the socket programs' slot
// and backend maps.
func (p *Proxy) loadTC(spec *ebpf.CollectionSpec) error {
	l := p.cfg.Limits
	for name, n := range map[string]uint32{
		tcMapKilnSlots:      l.Slots,
		tcMapKilnBackends:   l.Backends + 1,
		tcMapKilnFrontends:  l.Frontends,
		tcMapKilnCt:         l.Conntrack,
		tcMapKilnCt6:        l.Conntrack6,
		tcMapKilnTcAffinity: l.AffinityEntries,
		tcMapKilnMaglev:     l.Services,
	} {
		spec.Maps[name].MaxEntries = n
	}
	err := spec.LoadAndAssign(&p.tcObjs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: p.cfg.PinDir},
		MapReplacements: map[string]*ebpf.Map{
			tcMapKilnSlots:    p.objs.KilnSlots,
			tcMapKilnBackends: p.objs.KilnBackends,
		},
	})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("maps pinned in %s do not fit these limits (remove the directory to resize, which drops the datapath): %w", p.cfg.PinDir, err)
	}
	if err != nil {
		return fmt.Errorf("load TC BPF programs and maps: %w", err)
	}
	return nil
}

func (p *Proxy) attach(h hook, cgID uint64) (link.Link, error) {
	prog := h.prog(&p.objs.sockPrograms)
	pin := filepath.Join(p.cfg.PinDir, h.name)
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		info, ierr := old.Info()
		if ierr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgID {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, fmt.Errorf("replace program in pinned link %s: %w", pin, err)
			}
			p.log.Debug("replaced program in pinned link", "link", pin)
			return old, nil
		}
		// Pinned for another cgroup (or unreadable): attach ours, then let the
		// old one go.
		p.log.Warn("pinned link is for another cgroup; re-attaching", "link", pin, "info_error", ierr)
		if err := old.Unpin(); err != nil {
			old.Close()
			return nil, fmt.Errorf("unpin stale link %s: %w", pin, err)
		}
		defer old.Close()
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: p.cfg.Cgroup, Attach: h.attach, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", h.name, p.cfg.Cgroup, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin %s (the kernel needs BPF links, ≥ 5.7): %w", pin, err)
	}
	return l, nil
}

// cgroupID is the kernel's ID of a cgroup v2 directory: its inode number.
func cgroupID(dir string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup v2 directory", dir)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Close releases this process's hold on the datapath. Pinned maps and links stay, so
// the hooks keep balancing with the last programmed state until the next Open.
func (p *Proxy) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	for _, l := range p.tcLinks {
		errs = append(errs, l.Close())
	}
	p.tcLinks = nil
	errs = append(errs, p.objs.Close(), p.tcObjs.Close())
	return errors.Join(errs...)
}

// Remove detaches the programs and deletes the pinned maps and links: the datapath
// is gone once every holder has closed it. The Proxy is closed.
func (p *Proxy) Remove() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Unpin())
	}
	for _, l := range p.tcLinks {
		errs = append(errs, l.Unpin())
	}
	if err := os.Remove(filepath.Join(p.cfg.PinDir, layoutPin)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, m := range []*ebpf.Map{p.objs.KilnServices, p.objs.KilnSlots, p.objs.KilnBackends, p.objs.KilnRevnat, p.objs.KilnSkRevnat, p.objs.KilnAffinity,
		p.tcObjs.KilnFrontends, p.tcObjs.KilnLinks, p.tcObjs.KilnNodeAddrs, p.tcObjs.KilnCt, p.tcObjs.KilnCt6, p.tcObjs.KilnTcAffinity,
		p.tcObjs.KilnMaglev} {
		if m != nil {
			errs = append(errs, m.Unpin())
		}
	}
	errs = append(errs, p.Close())
	return errors.Join(errs...)
}

// Sync makes the programmed services exactly desired (a full resync). Services that
// are invalid or do not fit are reported in the error, keep their last good state,
// and do not hold up the others.
func (p *Proxy) Sync(desired []Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tab.sync(desired)
}

// Update programs upserts and removes deletes, leaving other services alone.
func (p *Proxy) Update(upserts []Service, deletes []ServiceKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tab.update(upserts, deletes)
}

// Upsert programs one service.
func (p *Proxy) Upsert(s Service) error { return p.Update([]Service{s}, nil) }

// Delete removes one service; removing one that is not there is not an error.
func (p *Proxy) Delete(k ServiceKey) error { return p.Update(nil, []ServiceKey{k}) }

// Services returns the programmed services, sorted, with backends in slot order.
func (p *Proxy) Services() []Service {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tab.services()
}

// Stats are fill levels for metrics.
type Stats struct {
	Services, Backends, Slots, Frontends int
	Limits                               Limits
}

// Stats returns how full the maps are.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Services: len(p.tab.svcs), Backends: len(p.tab.bes), Slots: p.tab.slotsUsed, Frontends: len(p.tab.fes), Limits: p.cfg.Limits}
}

// layoutVersion numbers the layout of the configuration maps (what their
// entries mean, not only their sizes): 2 has the first slots of a table inline
// in the service and frontend values, and the backends in an array; 3 serves
// IPv6 on the TCX programs, with a conntrack map of its own (kiln_ct6), IPv6
// SNAT sources in kiln_links and 16-byte clients in kiln_tc_affinity (those
// are replaced by replaceChangedStateMaps), and reads the configuration maps
// of 2 as they are. Version 1 had no marker.
const layoutVersion = 3

// configLayoutSince is the oldest layout version whose configuration maps
// (layoutMaps) layoutVersion reads as they are: Open keeps those, so that an
// upgrade does not empty the services until the next Sync.
const configLayoutSince = 2

// layoutPin is a one-element array map in the pin directory that holds the
// layout version of the maps pinned there.
const layoutPin = "kiln_layout"

// layoutMaps are the pinned maps whose layout layoutVersion describes. The
// others (reverse NAT, affinity, conntrack, links, node addresses) keep their
// entries across a layout change.
//
// kiln_maglev (Maglev tables by slot table ID, for the frontends flagged
// FE_F_MAGLEV) came without a version change: older code neither reads nor
// writes it and clears the flag when it adopts the frontends, and Open writes,
// checks or removes the tables to match Config.ExternalLB. It is removed with
// the configuration maps, whose slot table IDs it is keyed by.
var layoutMaps = []string{sockMapKilnServices, sockMapKilnSlots, sockMapKilnBackends, tcMapKilnFrontends, tcMapKilnMaglev}

// checkLayout removes the pinned configuration maps of another layout version,
// so that they are made anew instead of misread, and the pinned TC state maps
// whose layout changed (replaceChangedStateMaps). Their programs keep them
// until the links are updated; the services are programmed again by the next
// Sync.
func (p *Proxy) checkLayout(tcSpec *ebpf.CollectionSpec) error {
	if err := p.replaceChangedStateMaps(tcSpec); err != nil {
		return err
	}
	version, err := p.pinnedLayout()
	if err != nil {
		return err
	}
	if version >= configLayoutSince && version <= layoutVersion {
		return nil
	}
	for _, name := range layoutMaps {
		pin := filepath.Join(p.cfg.PinDir, name)
		err := os.Remove(pin)
		switch {
		case err == nil:
			p.log.Warn("removed a pinned map of another layout; services are programmed again by the next sync",
				"map", pin, "version", version, "want_version", layoutVersion)
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("remove pinned map %s of layout %d: %w", pin, version, err)
		}
	}
	return nil
}

// pinnedLayout returns the layout version of the pinned maps: 0 when there are
// none, 1 when there are maps but no marker.
func (p *Proxy) pinnedLayout() (uint32, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(p.cfg.PinDir, layoutPin), nil)
	if errors.Is(err, os.ErrNotExist) {
		for _, name := range layoutMaps {
			if _, err := os.Stat(filepath.Join(p.cfg.PinDir, name)); err == nil {
				return 1, nil
			}
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load layout marker: %w", err)
	}
	defer m.Close()
	var v uint32
	if err := m.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("read layout marker %s: %w", m, err)
	}
	return v, nil
}

// pinLayout records layoutVersion as the layout of the pinned maps.
func (p *Proxy) pinLayout() error {
	pin := filepath.Join(p.cfg.PinDir, layoutPin)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: layoutPin, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err == nil {
			if err = m.Pin(pin); err != nil {
				m.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("layout marker %s: %w", pin, err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), uint32(layoutVersion)); err != nil {
		return fmt.Errorf("write layout marker %s: %w", pin, err)
	}
	return nil
}
