package config

import "reflect"

// field is one top-level field of the machine or cluster section and how a
// change to it is applied.
type field struct {
	path   string
	get    func(*MachineConfig) any
	reboot bool
}

// rebootFields classifies every field of MachineSpec and ClusterSpec; a test makes
// sure none is missing. Secrets and identity need a reboot because every
// component derives certificates from them; what machined reconciles
// continuously applies live.
var rebootFields = []field{
	{"machine.type", func(m *MachineConfig) any { return m.Machine.Type }, true},
	{"machine.hostname", func(m *MachineConfig) any { return m.Machine.Hostname }, false},
	{"machine.token", func(m *MachineConfig) any { return m.Machine.Token }, true},
	{"machine.ca", func(m *MachineConfig) any { return m.Machine.CA }, true},
	{"machine.certSANs", func(m *MachineConfig) any { return m.Machine.CertSANs }, false},
	{"machine.install", func(m *MachineConfig) any { return m.Machine.Install }, true},
	{"machine.network", func(m *MachineConfig) any { return m.Machine.Network }, false},
	{"machine.time", func(m *MachineConfig) any { return m.Machine.Time }, false},
	{"machine.kubelet", func(m *MachineConfig) any { return m.Machine.Kubelet }, false},
	{"machine.sysctls", func(m *MachineConfig) any { return m.Machine.Sysctls }, false},
	{"machine.files", func(m *MachineConfig) any { return m.Machine.Files }, false},
	{"machine.kernelArgs", func(m *MachineConfig) any { return m.Machine.KernelArgs }, true},
	{"cluster.name", func(m *MachineConfig) any { return m.Cluster.Name }, true},
	{"cluster.controlPlane", func(m *MachineConfig) any { return m.Cluster.ControlPlane }, true},
	{"cluster.network", func(m *MachineConfig) any { return m.Cluster.Network }, true},
	{"cluster.proxy", func(m *MachineConfig) any { return m.Cluster.Proxy }, false},
	{"cluster.allowSchedulingOnControlPlanes", func(m *MachineConfig) any { return m.Cluster.AllowSchedulingOnControlPlanes }, false},
	{"cluster.ca", func(m *MachineConfig) any { return m.Cluster.CA }, true},
	{"cluster.etcd", func(m *MachineConfig) any { return m.Cluster.Etcd }, true},
	{"cluster.aggregatorCA", func(m *MachineConfig) any { return m.Cluster.AggregatorCA }, true},
	{"cluster.serviceAccount", func(m *MachineConfig) any { return m.Cluster.ServiceAccount }, true},
	{"cluster.token", func(m *MachineConfig) any { return m.Cluster.Token }, true},
	{"cluster.secretboxEncryptionSecret", func(m *MachineConfig) any { return m.Cluster.SecretboxEncryptionSecret }, true},
}

// RebootRequired returns the field paths whose change from old to new cannot
// be applied to a running node; empty means the new config applies live.
//
// Reboot: machine.type, machine.token, machine.ca, machine.install,
// machine.kernelArgs, cluster.name, cluster.controlPlane, cluster.network
// and every cluster CA and secret. Live: machine.hostname, machine.certSANs,
// machine.network, machine.time, machine.kubelet, machine.sysctls,
// machine.files, cluster.proxy, cluster.allowSchedulingOnControlPlanes and
// the services. A nil old (no config yet) needs no reboot.
func RebootRequired(old, new *Config) []string {
	if old == nil || old.Machine == nil || new == nil || new.Machine == nil {
		return nil
	}
	var out []string
	for _, f := range rebootFields {
		if f.reboot && !equalValues(f.get(old.Machine), f.get(new.Machine)) {
			out = append(out, f.path)
		}
	}
	return out
}

// equalValues compares treating nil and empty slices and maps alike, as the
// YAML does.
func equalValues(a, b any) bool {
	return isEmptyEqual(reflect.ValueOf(a), reflect.ValueOf(b))
}

func isEmptyEqual(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !isEmptyEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		iter := a.MapRange()
		for iter.Next() {
			bv := b.MapIndex(iter.Key())
			if !bv.IsValid() || !isEmptyEqual(iter.Value(), bv) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range a.NumField() {
			if !isEmptyEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return isEmptyEqual(a.Elem(), b.Elem())
	}
	return a.Equal(b)
}
