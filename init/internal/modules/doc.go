// Package modules loads kernel modules for init without depmod or modprobe: it reads
// the image's module manifest (written by images/kmod: modules in load order with their
// dependencies and device aliases), loads modules through finit_module with their
// dependencies first (independent ones in parallel), loads a request's providers
// ("fs-squashfs") as the kernel's request_module would, tells device drivers (bus
// aliases) from modules every boot needs (filesystems), and coldplugs: it reads the
// modalias of every device on a bus (/sys/bus/*/devices) and loads the modules whose
// alias patterns match, scanning again while new devices appear.
package modules
