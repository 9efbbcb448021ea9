// Package modules loads kernel modules for init without depmod or modprobe: it reads
// the image's module manifest (written by images/kmod: modules in load order with their
// dependencies and device aliases), loads a stage's modules dependencies first through
// finit_module, and coldplugs: it reads every device's modalias under /sys/devices and
// loads the modules whose alias patterns match, repeating while new devices appear.
package modules
