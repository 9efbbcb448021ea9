#!/usr/bin/env bash
# Builds Kiln's upstream components from pinned sources into a cache keyed by
# the pins.
#
#   controlplane/build.sh [-a amd64|arm64] [COMPONENT...]
#
# Components: kube (k8s + etcd multi-call binary), containerd (+ shim), runc,
# cni (bridge, host-local, loopback, portmap), images (pause + CoreDNS OCI
# archives). Default: all of these. kube-proxy (upstream, pinned in its own
# module controlplane/kubeproxy at the kube module's k8s.io/kubernetes version)
# is a benchmark-only anchor, built only when named.
#
# Each component is a nested Go module under controlplane/ that pins its
# upstream in go.mod/go.sum (one module per upstream, so no upstream's
# dependency graph is bent by another's). A component's cache key is the
# SHA-256 of its go.mod, go.sum, its recipe below, the Go version and the
# architecture; when $OUT/<arch>/<component>-<key> exists nothing is compiled.
# $OUT/<arch>/<component> is a symlink to the current build.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CP=$ROOT/controlplane
OUT=${KILN_COMPONENTS:-$ROOT/_out/components}
ARCH=$(go env GOARCH)
# Other engineers share the cores: build at the lowest priority.
NICE=${NICE:-nice -n 19}

while getopts a: opt; do
	case $opt in
	a) ARCH=$OPTARG ;;
	*) echo "usage: $0 [-a amd64|arm64] [kube|containerd|runc|cni|images...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- kube containerd runc cni images

# modversion MODULE_DIR MODULE prints the pinned version of MODULE.
modversion() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }

# modtime MODULE_DIR MODULE prints the module's publication time: a
# reproducible build date.
modtime() { (cd "$1" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$2"); }

# need_debs TOOL FILE PACKAGE...: install the Debian packages (as root)
# unless TOOL is on PATH and FILE exists.
need_debs() {
	local tool=$1 file=$2
	shift 2
	if command -v "$tool" >/dev/null && [ -e "$file" ]; then return; fi
	if [ "$(id -u)" != 0 ]; then
		echo "missing $tool or $file: apt-get install $*" >&2
		exit 1
	fi
	case " $* " in *:arm64*) dpkg --add-architecture arm64 && apt-get update -qq ;; esac
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

gobuild() {
	# shellcheck disable=SC2086
	$NICE env GOOS=linux GOARCH="$ARCH" GOFLAGS=-buildvcs=false go build -trimpath "$@"
}

build_kube() { # $1 = output dir
	local dir=$CP/kube v date ld=()
	v=$(modversion "$dir" k8s.io/kubernetes)
	date=$(modtime "$dir" k8s.io/kubernetes)
	local major=${v#v} minor
	minor=${major#*.}
	minor=${minor%%.*}
	major=${major%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=(-X "$pkg.gitVersion=$v" -X "$pkg.gitMajor=$major" -X "$pkg.gitMinor=$minor"
			-X "$pkg.gitTreeState=clean" -X "$pkg.buildDate=$date")
	done
	(cd "$dir" && CGO_ENABLED=0 gobuild -ldflags "-s -w ${ld[*]}" -o "$1/kube" ./cmd/kube)
}

# build_kube-proxy: upstream kube-proxy, the anchor of the service proxy
# benchmark (tools/bench/proxy). Same flags and version stamp as kube, so the
# go build cache shares most of the compile.
build_kube-proxy() { # $1 = output dir
	local dir=$CP/kubeproxy v date ld=()
	v=$(modversion "$dir" k8s.io/kubernetes)
	date=$(modtime "$dir" k8s.io/kubernetes)
	local major=${v#v} minor
	minor=${major#*.}
	minor=${minor%%.*}
	major=${major%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=(-X "$pkg.gitVersion=$v" -X "$pkg.gitMajor=$major" -X "$pkg.gitMinor=$minor"
			-X "$pkg.gitTreeState=clean" -X "$pkg.buildDate=$date")
	done
	(cd "$dir" && CGO_ENABLED=0 gobuild -ldflags "-s -w ${ld[*]}" -o "$1/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy)
}

build_containerd() {
	local dir=$CP/runtime/containerd v
	v=$(modversion "$dir" github.com/containerd/containerd/v2)
	(cd "$dir" && CGO_ENABLED=0 gobuild -tags "no_btrfs no_devmapper" \
		-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$v" \
		-o "$1/" github.com/containerd/containerd/v2/cmd/containerd \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
		github.com/containerd/containerd/v2/cmd/ctr)
}

# runc needs cgo for libseccomp, linked statically (apt: libseccomp-dev, and
# for arm64 gcc-aarch64-linux-gnu libseccomp-dev:arm64). Its version comes
# from its embedded VERSION file.
build_runc() {
	local dir=$CP/runtime/runc cc=gcc
	if [ "$ARCH" = arm64 ] && [ "$(go env GOHOSTARCH)" != arm64 ]; then
		cc=aarch64-linux-gnu-gcc
		need_debs aarch64-linux-gnu-gcc /usr/lib/aarch64-linux-gnu/libseccomp.a \
			gcc-aarch64-linux-gnu libseccomp-dev:arm64
	else
		need_debs gcc "/usr/lib/$(gcc -print-multiarch 2>/dev/null)/libseccomp.a" gcc libseccomp-dev
	fi
	(cd "$dir" && CGO_ENABLED=1 CC=$cc gobuild -tags "seccomp urfave_cli_no_docs netgo osusergo" \
		-ldflags "-s -w -extldflags -static" -o "$1/runc" github.com/opencontainers/runc)
}

build_cni() {
	local dir=$CP/runtime/cni v p
	v=$(modversion "$dir" github.com/containernetworking/plugins)
	for p in main/bridge ipam/host-local main/loopback meta/portmap; do
		(cd "$dir" && CGO_ENABLED=0 gobuild \
			-ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$v" \
			-o "$1/" "github.com/containernetworking/plugins/plugins/$p")
	done
}

# images: Kiln's pause (root module) and the pinned CoreDNS (with the plugin
# set of controlplane/images/coredns/main.go), packed into OCI
# archives by controlplane/images/cmd/mkoci. Binaries stay in a bin/
# subdirectory for size figures.
build_images() {
	local dir=$CP/images/coredns v
	v=$(modversion "$dir" github.com/coredns/coredns)
	mkdir -p "$1/bin"
	(cd "$ROOT" && CGO_ENABLED=0 gobuild -ldflags "-s -w" -o "$1/bin/pause" ./controlplane/images/pause)
	(cd "$dir" && CGO_ENABLED=0 gobuild -ldflags "-s -w" -o "$1/bin/coredns" .)
	(cd "$ROOT" && go run ./controlplane/images/cmd/mkoci -out "$1" -arch "$ARCH" \
		-pause "$1/bin/pause" -coredns "$1/bin/coredns" -coredns-name "registry.k8s.io/coredns/coredns:$v")
}

# extra_key_images: the images also depend on Kiln's own sources.
extra_key_images() {
	find "$CP/images" -name '*.go' -print | LC_ALL=C sort | xargs cat
	(cd "$ROOT" && go list -m github.com/google/go-containerregistry)
}

# build NAME MODULE_DIR: build component NAME unless its keyed output exists.
build() {
	local name=$1 dir=$2 key dst
	key=$({
		cat "$dir/go.mod" "$dir/go.sum"
		declare -f "build_$name" gobuild
		if declare -F "extra_key_$name" >/dev/null; then "extra_key_$name"; fi
		go version
		echo "$ARCH"
	} | sha256sum | cut -c1-16)
	dst=$OUT/$ARCH/$name-$key
	if [ -d "$dst" ]; then
		echo "$name: cached $dst"
	else
		echo "$name: building $dst"
		local start=$SECONDS tmp=$dst.tmp.$$
		rm -rf "$tmp" && mkdir -p "$tmp"
		"build_$name" "$tmp"
		mv "$tmp" "$dst"
		echo "$name: built in $((SECONDS - start)) s"
	fi
	ln -sfn "$(basename "$dst")" "$OUT/$ARCH/$name"
}

for c in "$@"; do
	case $c in
	kube) build kube "$CP/kube" ;;
	kube-proxy) build kube-proxy "$CP/kubeproxy" ;;
	containerd) build containerd "$CP/runtime/containerd" ;;
	runc) build runc "$CP/runtime/runc" ;;
	cni) build cni "$CP/runtime/cni" ;;
	images) build images "$CP/images/coredns" ;;
	*) echo "unknown component $c" >&2; exit 2 ;;
	esac
done
