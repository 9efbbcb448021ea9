package supervisor

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	ok := func(id string, deps ...string) Spec { return Spec{ID: id, Command: "/bin/true", DependsOn: deps} }
	tests := []struct {
		name    string
		specs   []Spec
		wantErr string // substring; "" means valid
	}{
		{"empty", nil, ""},
		{"chain", []Spec{ok("a"), ok("b", "a"), ok("c", "a", "b")}, ""},
		{"bad id", []Spec{ok("../etc")}, `id "../etc"`},
		{"dot id", []Spec{ok(".hidden")}, `id ".hidden"`},
		{"empty id", []Spec{ok("")}, `id ""`},
		{"duplicate", []Spec{ok("a"), ok("a")}, `duplicate service id "a"`},
		{"no command", []Spec{{ID: "a"}}, "command is empty"},
		{"bad kind", []Spec{{ID: "a", Command: "x", Kind: "daemon"}}, `kind "daemon"`},
		{"bad policy", []Spec{{ID: "a", Command: "x", Restart: "sometimes"}}, `restart policy "sometimes"`},
		{"bad env", []Spec{{ID: "a", Command: "x", Env: []string{"NOEQUALS"}}}, `env entry "NOEQUALS"`},
		{"self dependency", []Spec{ok("a", "a")}, "depends on itself"},
		{"unknown dependency", []Spec{ok("a", "ghost")}, `depends on unknown service "ghost"`},
		{"cycle", []Spec{ok("a", "c"), ok("b", "a"), ok("c", "b")}, "dependency cycle: a -> c -> b -> a"},
		{"empty health", []Spec{{ID: "a", Command: "x", Health: &HealthCheck{}}}, "needs exec or tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := validate(tt.specs)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartOrder(t *testing.T) {
	specs, err := validate([]Spec{
		{ID: "kubelet", Command: "x", DependsOn: []string{"containerd", "apiserver"}},
		{ID: "apiserver", Command: "x", DependsOn: []string{"etcd"}},
		{ID: "etcd", Command: "x"},
		{ID: "containerd", Command: "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := startOrder(specs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etcd", "apiserver", "containerd", "kubelet"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("startOrder (-want +got):\n%s", diff)
	}
}

func TestNormalizeDefaults(t *testing.T) {
	got := normalize(Spec{ID: "a", Command: "x", Args: []string{}, Health: &HealthCheck{TCP: "h:1", Exec: []string{}}})
	want := Spec{ID: "a", Command: "x", Kind: KindSystem, Restart: RestartAlways, Health: &HealthCheck{TCP: "h:1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("normalize (-want +got):\n%s", diff)
	}
}

// TestConcurrentOperations races every public operation against each
// other; run with -race. It checks that nothing deadlocks, and that
// Shutdown afterwards leaves no goroutine behind.
func TestConcurrentOperations(t *testing.T) {
	opts := testOptions(t)
	s := New(opts)
	base := []Spec{sleeper("a"), sleeper("b", "a"), {ID: "c", Command: "/bin/false"}}
	reconcile(t, s, base...)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 15 {
				id := []string{"a", "b", "c"}[(w+i)%3]
				switch i % 5 {
				case 0:
					s.Stop(id)
				case 1:
					s.Start(id)
				case 2:
					s.Restart(id)
				case 3:
					s.List()
				case 4:
					specs := base
					if i%2 == 0 {
						specs = base[:1]
					}
					s.Reconcile(context.Background(), specs)
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	s.runners.Wait()
	for _, st := range s.List() {
		if st.State != Stopped {
			t.Errorf("%s after Shutdown: %s", st.ID, st.State)
		}
	}
}
