package cmdline

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFields(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  console=ttyS0   quiet\n", []string{"console=ttyS0", "quiet"}},
		{`a="b c" d`, []string{"a=b c", "d"}},
		{`"x y"`, []string{"x y"}},
	} {
		if got := Fields(tt.in); !cmp.Equal(got, tt.want) {
			t.Errorf("Fields(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      string
		want    Params
		wantErr string
	}{
		{
			name: "defaults",
			in:   "console=ttyS0 quiet",
			want: Params{Machined: DefaultMachined, Root: DefaultRoot, Modules: true, StopTimeout: 30 * time.Second,
				Raw: map[string]string{"console": "ttyS0", "quiet": ""}},
		},
		{
			name: "all set",
			in:   "kiln.machined=/usr/bin/m kiln.root=/r.sqsh kiln.modules=0 kiln.debug kiln.stop_timeout=5s",
			want: Params{Machined: "/usr/bin/m", Root: "/r.sqsh", Modules: false, Debug: true, StopTimeout: 5 * time.Second,
				Raw: map[string]string{"kiln.machined": "/usr/bin/m", "kiln.root": "/r.sqsh", "kiln.modules": "0", "kiln.debug": "", "kiln.stop_timeout": "5s"}},
		},
		{
			name: "module parameters",
			in:   `quiet bonding.max_bonds=0 dummy.numdummies=0 snd-hda-intel.model="a b" usbcore.nousb kiln.debug=0 .x=1 y.=2 bonding.miimon=100`,
			want: Params{Machined: DefaultMachined, Root: DefaultRoot, Modules: true, StopTimeout: 30 * time.Second,
				Raw: map[string]string{"quiet": "", "bonding.max_bonds": "0", "dummy.numdummies": "0", "snd-hda-intel.model": "a b",
					"usbcore.nousb": "", "kiln.debug": "0", ".x": "1", "y.": "2", "bonding.miimon": "100"},
				ModuleParams: map[string][]string{
					"bonding":       {"max_bonds=0", "miimon=100"},
					"dummy":         {"numdummies=0"},
					"snd_hda_intel": {`model="a b"`},
					"usbcore":       {"nousb"},
				}},
		},
		{
			name:    "bad values keep defaults",
			in:      "kiln.machined=sbin/m kiln.stop_timeout=soon kiln.modules=maybe",
			want:    Params{Machined: DefaultMachined, Root: DefaultRoot, Modules: true, StopTimeout: 30 * time.Second, Raw: map[string]string{"kiln.machined": "sbin/m", "kiln.stop_timeout": "soon", "kiln.modules": "maybe"}},
			wantErr: `kiln.machined="sbin/m": want an absolute path; kiln.stop_timeout="soon": want a duration like 30s; kiln.modules: "maybe" is not a boolean (use 1 or 0)`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
