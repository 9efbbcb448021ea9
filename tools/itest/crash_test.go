package itest

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/kiln-os/kiln/machined/api/machine"
	"github.com/kiln-os/kiln/machined/config"
	"github.com/kiln-os/kiln/tools/internal/procnode"
)

// TestCrashDuringApply SIGKILLs machined at random moments while it applies a
// config, 200 times. After every restart the node's config must be exactly the
// one before the apply or the one being applied — never a mix, never lost.
func TestCrashDuringApply(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	n := procnode.New(t, bins.machined)
	n.Start()
	dir := t.TempDir()
	mustKctl(t, nil, "gen", "config", "crash", "https://127.0.0.1:6443", "--output-dir", dir)
	cp := readFile(t, filepath.Join(dir, "controlplane.yaml"))
	mustKctl(t, nil, "apply-config", "--insecure", "-n", n.Addr, "-f", filepath.Join(dir, "controlplane.yaml"))
	kcfg := filepath.Join(dir, "kctlconfig")

	// Two configs that differ live (an extension service's argument), so
	// NO_REBOOT applies them. The service exits at once: SIGKILLed machineds
	// must not leave long-running children behind.
	oneShot := func(word string) string {
		return "---\napiVersion: kiln.dev/v1alpha1\nkind: ServiceConfig\nname: crash\ncommand: /bin/echo\nargs: [" + word + "]\nrestart: never\n"
	}
	versions := [2][]byte{
		[]byte(cp + oneShot("even")),
		[]byte(cp + oneShot("odd")),
	}
	var canon [2][]byte
	for i, v := range versions {
		c, err := config.Parse(v)
		if err != nil {
			t.Fatalf("config %d does not parse: %v", i, err)
		}
		if canon[i], err = c.Redacted().Bytes(); err != nil {
			t.Fatal(err)
		}
	}
	current := func(c interface {
		GetConfig(context.Context, *machine.GetConfigRequest, ...grpc.CallOption) (*machine.GetConfigResponse, error)
	}) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := c.GetConfig(ctx, &machine.GetConfigRequest{})
		if err != nil {
			t.Fatalf("get config: %v", err)
		}
		got, err := config.Parse(resp.GetData())
		if err != nil {
			// Redacted configs carry placeholders; compare the text then.
			return resp.GetData()
		}
		b, _ := got.Redacted().Bytes()
		return b
	}
	which := func(b []byte) int {
		for i, c := range canon {
			if bytes.Equal(b, c) {
				return i
			}
		}
		return -1
	}

	// Start from version 0.
	c := n.AdminClient(t, kcfg)
	waitFor(t, "first apply over mTLS", func() (bool, string) {
		_, err := c.ApplyConfiguration(context.Background(), &machine.ApplyConfigurationRequest{Data: versions[0], Mode: machine.ApplyMode_APPLY_MODE_NO_REBOOT})
		return err == nil, errString(err)
	})
	old := 0
	rng := rand.New(rand.NewPCG(1, 2))
	var sawOld, sawNew int
	for i := range rounds {
		next := 1 - old
		c := n.AdminClient(t, kcfg)
		go func() {
			_, _ = c.ApplyConfiguration(context.Background(), &machine.ApplyConfigurationRequest{Data: versions[next], Mode: machine.ApplyMode_APPLY_MODE_NO_REBOOT})
		}()
		time.Sleep(time.Duration(rng.IntN(40_000)) * time.Microsecond)
		n.Kill()
		n.Start()
		c = n.AdminClient(t, kcfg)
		got := which(current(c))
		switch got {
		case old:
			sawOld++
		case next:
			sawNew++
			old = next
		default:
			t.Fatalf("round %d: after SIGKILL the config is neither the old nor the new one:\n%s", i, current(c))
		}
	}
	t.Logf("%d rounds: old config kept %d times, new config stored %d times", rounds, sawOld, sawNew)
	if _, err := os.Stat(n.Root); err != nil {
		t.Fatal(err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
