// Package supervise is PID 1's life after boot: it runs machined as its child and
// restarts it with backoff when it dies, reaps every orphan, turns signals into
// shutdown requests, and carries out reboot and power-off (stop machined, kill what is
// left, sync, unmount, reboot(2)).
//
// The channel from machined (or the kernel) to init is signals, as busybox init and
// sysvinit use them:
//
//	SIGTERM  reboot
//	SIGINT   reboot (the kernel sends it for Ctrl-Alt-Del once init disabled the hard reset)
//	SIGUSR2  power off
//	SIGPWR   power off
//	SIGUSR1  halt
//
// machined stops its services first and then signals PID 1; init still gives machined
// its stop timeout (SIGTERM) before it kills everything, so the same path is safe when the
// request comes from the kernel.
package supervise
