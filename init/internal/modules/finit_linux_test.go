package modules

import "testing"

func TestParamString(t *testing.T) {
	params := map[string][]string{
		"dummy":         {"numdummies=0"},
		"bonding":       {"max_bonds=0", "miimon=100"},
		"snd_hda_intel": {`model="a b"`},
	}
	for _, tt := range []struct{ path, want string }{
		{"/lib/modules/6.12/kernel/drivers/net/dummy.ko.xz", "numdummies=0"},
		{"/lib/modules/6.12/kernel/drivers/net/bonding/bonding.ko.zst", "max_bonds=0 miimon=100"},
		{"sound/pci/hda/snd-hda-intel.ko.gz", `model="a b"`},
		{"drivers/net/dummy.ko", "numdummies=0"},
		{"drivers/net/veth.ko.xz", ""},
		// The name is the whole base name: no match on a prefix.
		{"drivers/net/dummyx.ko.xz", ""},
	} {
		if got := ParamString(params, tt.path); got != tt.want {
			t.Errorf("ParamString(%s) = %q, want %q", tt.path, got, tt.want)
		}
	}
	if got := ParamString(nil, "dummy.ko"); got != "" {
		t.Errorf("ParamString(nil, dummy.ko) = %q, want none", got)
	}
}
