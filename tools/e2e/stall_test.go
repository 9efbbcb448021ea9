package e2e

import "testing"

func TestStalledBeforeInit(t *testing.T) {
	const (
		kernel = "[    2.1] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks\n"
		banner = "Kiln dev (init, kernel 6.12.95+kiln-amd64, amd64)\n"
		stall  = "[   23.4] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"
		timer  = "[   44.0] rcu: rcu_preempt kthread timer wakeup didn't happen for 2503 jiffies!\n"
	)
	for _, tt := range []struct {
		name, console string
		want          bool
	}{
		{"stall before init", kernel + stall, true},
		{"timer report before init", kernel + timer, true},
		{"self-detected stall before init", kernel + "[   23.4] rcu: INFO: rcu_preempt self-detected stall on CPU\n", true},
		{"stall after init's banner", kernel + banner + stall, false},
		{"no stall", kernel + banner, false},
		{"nothing yet", "", false},
	} {
		if got := stalledBeforeInit(tt.console); got != tt.want {
			t.Errorf("%s: stalledBeforeInit = %v, want %v", tt.name, got, tt.want)
		}
	}
}
