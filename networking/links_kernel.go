package networking

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// linkTable is the kernel's links by name, re-read after changes that add or
// remove links.
type linkTable map[string]netlink.Link

func (r *Reconciler) readLinks() (linkTable, error) {
	ls, err := r.k.LinkList()
	if err != nil {
		return nil, err
	}
	t := linkTable{}
	for _, l := range ls {
		t[l.Attrs().Name] = l
	}
	return t, nil
}

func managedLink(l netlink.Link) bool { return l.Attrs().Alias == LinkAlias }

// matches reports whether a link Kiln created is what ls asks for; one that
// is not is deleted and created again (a bond's mode or a VLAN's parent and
// ID cannot change in place).
func matches(l netlink.Link, ls LinkSpec, t linkTable) bool {
	switch ls.Kind {
	case KindVLAN:
		v, ok := l.(*netlink.Vlan)
		p, pok := t[ls.Parent]
		return ok && pok && v.VlanId == ls.VLANID && v.ParentIndex == p.Attrs().Index
	case KindBond:
		b, ok := l.(*netlink.Bond)
		m, err := bondMode(ls.BondMode)
		return ok && err == nil && b.Mode == m
	}
	return false
}

// describe says what a bond or VLAN LinkSpec asks for, for messages.
func describe(ls LinkSpec) string {
	switch ls.Kind {
	case KindBond:
		return "bond, mode " + ls.BondMode
	case KindVLAN:
		return fmt.Sprintf("VLAN %d on %s", ls.VLANID, ls.Parent)
	}
	return ls.Kind
}

// links is the link stage: it deletes the links Kiln created that the specs
// no longer name, creates bonds and VLANs, enslaves and releases bond members
// and sets MTU and up/down. It returns the link table after the changes.
func (r *Reconciler) links(specs []LinkSpec) (linkTable, error) {
	t, err := r.readLinks()
	if err != nil {
		return nil, err
	}
	want := map[string]LinkSpec{}
	for _, ls := range specs {
		want[ls.Name] = ls
	}

	// Delete: VLANs first, then bonds (a bond's VLANs go with it anyway).
	deleted := false
	for _, kind := range []string{"vlan", "bond"} {
		for name, l := range t {
			if !managedLink(l) || l.Type() != kind {
				continue
			}
			if ls, ok := want[name]; ok && ls.Kind != KindExisting && matches(l, ls, t) {
				continue
			}
			if err := r.k.LinkDel(l); err != nil && !isNotFound(err) {
				return nil, err
			}
			deleted = true
		}
		if deleted {
			if t, err = r.readLinks(); err != nil {
				return nil, err
			}
			deleted = false
		}
	}

	// Create bonds, then VLANs (a VLAN may sit on a bond), and mark them: the
	// kernel ignores an alias given with RTM_NEWLINK, so it is set at once
	// after. A link of the Spec's name and kind without any alias is marked
	// too: Kiln made it and stopped before it could mark it (or an earlier
	// Kiln made it unmarked); without the mark it would never be removed or
	// made again.
	var errs []error
	foreign := map[string]string{}
	defer func() { r.foreign = foreign }()
	for _, kind := range []string{KindBond, KindVLAN} {
		created := false
		for _, ls := range specs {
			if ls.Kind != kind {
				continue
			}
			if x, ok := t[ls.Name]; ok {
				switch {
				case x.Attrs().Alias == "" && matches(x, ls, t):
					r.log.Info("marking an unmarked link as Kiln's", "link", ls.Name)
					if err := r.k.LinkSetAlias(x, LinkAlias); err != nil {
						errs = append(errs, err)
					}
					created = true
				case !managedLink(x) && !matches(x, ls, t):
					// Not Kiln's, and not what the configuration describes (another kind,
					// bond mode or VLAN): Kiln does not remove a link it did not make, so
					// the configured one cannot be made. Say so instead of going on
					// quietly with the other link; once for as long as the link and
					// the configuration stay as they are.
					want := describe(ls)
					key := fmt.Sprintf("%d %s %s", x.Attrs().Index, x.Type(), want)
					if r.foreign[ls.Name] != key {
						r.log.Warn("a link of the configured name exists, is not Kiln's and does not match the configuration; left as it is",
							"link", ls.Name, "type", x.Type(), "want", want)
					}
					foreign[ls.Name] = key
				}
				continue
			}
			l, err := newLink(ls, t)
			if err == nil {
				err = r.k.LinkAdd(l)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			created = true
			if err := r.k.LinkSetAlias(l, LinkAlias); err != nil {
				errs = append(errs, err)
			}
		}
		if created {
			if t, err = r.readLinks(); err != nil {
				return nil, err
			}
		}
	}

	// Bond membership: release members Kiln enslaved to a bond that no longer
	// wants them, enslave the wanted ones (a link must be down to be enslaved).
	byIndex := map[int]netlink.Link{}
	for _, l := range t {
		byIndex[l.Attrs().Index] = l
	}
	for name, l := range t {
		a := l.Attrs()
		ls, wanted := want[name]
		if a.MasterIndex != 0 && (!wanted || ls.Master == "") {
			if m, ok := byIndex[a.MasterIndex]; ok && managedLink(m) && m.Type() == "bond" {
				if err := r.k.LinkSetMaster(l, 0); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		if !wanted || ls.Master == "" {
			continue
		}
		m, ok := t[ls.Master]
		if !ok || a.MasterIndex == m.Attrs().Index {
			continue
		}
		if a.Flags&net.FlagUp != 0 {
			if err := r.k.LinkSetDown(l); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := r.k.LinkSetMaster(l, m.Attrs().Index); err != nil {
			errs = append(errs, err)
		}
	}

	// MTU and up/down, in spec order (members before their bond, parents
	// before their VLANs). Re-read: enslaving changes flags.
	if t, err = r.readLinks(); err != nil {
		return nil, err
	}
	for _, ls := range specs {
		l, ok := t[ls.Name]
		if !ok {
			continue
		}
		a := l.Attrs()
		if ls.MTU > 0 && a.MTU != ls.MTU {
			if err := r.k.LinkSetMTU(l, ls.MTU); err != nil {
				errs = append(errs, err)
			}
		}
		up := a.Flags&net.FlagUp != 0
		switch {
		case ls.Down && up:
			if err := r.k.LinkSetDown(l); err != nil {
				errs = append(errs, err)
			}
		case !ls.Down && !up:
			if err := r.k.LinkSetUp(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return t, errors.Join(errs...)
}

func newLink(ls LinkSpec, t linkTable) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = ls.Name
	switch ls.Kind {
	case KindBond:
		m, err := bondMode(ls.BondMode)
		if err != nil {
			return nil, fmt.Errorf("bond %s: %w", ls.Name, err)
		}
		b := netlink.NewLinkBond(attrs)
		b.Mode = m
		b.Miimon = 100
		if m == netlink.BOND_MODE_802_3AD {
			b.LacpRate = netlink.BOND_LACP_RATE_FAST
		}
		return b, nil
	case KindVLAN:
		p, ok := t[ls.Parent]
		if !ok {
			return nil, fmt.Errorf("VLAN %s: parent %s not found", ls.Name, ls.Parent)
		}
		attrs.ParentIndex = p.Attrs().Index
		return &netlink.Vlan{LinkAttrs: attrs, VlanId: ls.VLANID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}, nil
	}
	return nil, fmt.Errorf("link %s: Kiln does not create links of kind %q", ls.Name, ls.Kind)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, errNoDevice)
}
