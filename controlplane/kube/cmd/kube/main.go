// Command kube is Kiln's multi-call binary of the upstream control-plane
// and node components: `kube apiserver|controller-manager|scheduler|kubelet|
// kubectl|etcd|etcdctl ARGS...`, or the same selected by argv[0] through a
// symlink (kube-apiserver, kubelet, etcd, ...). Each subcommand calls the
// upstream command constructor, exactly as the upstream main does, so flags
// and behaviour are upstream's. One binary shares the Go runtime and the
// common libraries, which makes it far smaller than separate binaries.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// component runs one upstream main with os.Args already rewritten to
// [name, args...] and returns its exit code (some upstream mains exit
// themselves).
type component func() int

// components maps a subcommand to its upstream main. The names are the
// subcommands; aliases (argv[0] names) are listed in aliases.
var components = map[string]component{
	"apiserver":          runAPIServer,
	"controller-manager": runControllerManager,
	"scheduler":          runScheduler,
	"kubelet":            runKubelet,
	"kubectl":            runKubectl,
	"etcd":               runEtcd,
	"etcdctl":            runEtcdctl,
}

// aliases are the upstream binary names a symlink may carry.
var aliases = map[string]string{
	"kube-apiserver":          "apiserver",
	"kube-controller-manager": "controller-manager",
	"kube-scheduler":          "scheduler",
}

func main() {
	os.Exit(run(os.Args))
}

// run selects the component from argv[0] or, for the kube binary itself,
// from the first argument, and rewrites os.Args for the upstream main.
func run(argv []string) int {
	if name, ok := lookup(filepath.Base(argv[0])); ok {
		return components[name]()
	}
	if len(argv) < 2 || argv[1] == "-h" || argv[1] == "--help" || argv[1] == "help" {
		usage()
		if len(argv) < 2 {
			return 2
		}
		return 0
	}
	name, ok := lookup(argv[1])
	if !ok {
		fmt.Fprintf(os.Stderr, "kube: unknown component %q\n", argv[1])
		usage()
		return 2
	}
	os.Args = append([]string{upstreamName(name)}, argv[2:]...)
	return components[name]()
}

func lookup(name string) (string, bool) {
	if a, ok := aliases[name]; ok {
		name = a
	}
	_, ok := components[name]
	return name, ok
}

// upstreamName is argv[0] as the upstream binary would see it.
func upstreamName(name string) string {
	for a, n := range aliases {
		if n == name {
			return a
		}
	}
	return name
}

func usage() {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: kube COMPONENT [ARGS...]\ncomponents: %s\n", strings.Join(names, ", "))
}
