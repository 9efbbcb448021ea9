#!/usr/bin/env bash
# build-kernel.sh: build a board's kernel from Debian's kernel source package with
# Debian's configuration and the board's changes to it (boards/kernel/<board>.config).
# images/kernel runs it (make kernel) with the pinned packages and puts the result in
# its cache, keyed by every input including this script; run by hand only to debug.
#
#   build-kernel.sh SOURCE_DEB CONFIG_DEB CONFIG_NAME FRAGMENT OUT
#
# SOURCE_DEB  linux-source-X.Y .deb (holds usr/src/linux-source-X.Y.tar.xz)
# CONFIG_DEB  linux-config-X.Y .deb (holds usr/src/linux-config-X.Y/CONFIG_NAME)
# FRAGMENT    the board's lines; every CONFIG_ line of it must hold after olddefconfig
# OUT         created with vmlinuz, config and release; must not exist yet
#
# Every module (=m) of Debian's configuration is turned off before the fragment is
# applied, so the fragment says what the kernel builds in. Only amd64 (bzImage) so far.
# The build is reproducible for the same inputs and toolchain: the build's time stamp
# is the source tarball's, user and host are fixed, and nothing of the build directory
# reaches the image (see the prefix map below). OUT appears whole or not at all.
set -euo pipefail

if [ $# -ne 5 ]; then
	echo "usage: build-kernel.sh SOURCE_DEB CONFIG_DEB CONFIG_NAME FRAGMENT OUT" >&2
	exit 2
fi
src_deb=$1 cfg_deb=$2 cfg_name=$3 fragment=$4 out=$5
jobs=${KILN_KERNEL_JOBS:-$(nproc)}

if [ -e "$out" ]; then
	echo "build-kernel: $out exists already" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$out.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "build-kernel: unpacking $(basename "$src_deb")"
dpkg-deb --fsys-tarfile "$src_deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' |
	tar -xJ -C "$work"
src=$(echo "$work"/linux-source-*)
if [ ! -f "$src/Makefile" ]; then
	echo "build-kernel: $src_deb holds no kernel source tree" >&2
	exit 1
fi

# Debian's configuration without its modules, then the board's lines.
dpkg-deb --fsys-tarfile "$cfg_deb" | tar -xO --wildcards "./usr/src/linux-config-*/$cfg_name" |
	xz -d | sed -E 's/^(CONFIG_[A-Za-z0-9_]+)=m$/# \1 is not set/' >"$src/.config"
cat "$fragment" >>"$src/.config"
# The override warnings name every symbol the fragment changes: expected, not shown.
if ! olddef=$(make -s -C "$src" olddefconfig 2>&1); then
	echo "$olddef" >&2
	exit 1
fi
echo "$olddef" | grep -v 'warning: override: reassigning to symbol' >&2 || true
bad=0
while IFS= read -r line; do
	if ! grep -qxF -- "$line" "$src/.config"; then
		sym=$(echo "$line" | grep -oE 'CONFIG_[A-Za-z0-9_]+')
		now=$(grep -E "^(# )?$sym[= ]" "$src/.config" || echo "absent")
		echo "build-kernel: $fragment: \"$line\" does not hold after olddefconfig (now: $now); a dependency is off" >&2
		bad=1
	fi
done < <(grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set$)' "$fragment")
[ "$bad" = 0 ] || exit 1

stamp=$(date -u -R -r "$src/Makefile")
export KBUILD_BUILD_TIMESTAMP="$stamp" KBUILD_BUILD_USER=kiln KBUILD_BUILD_HOST=kiln KBUILD_BUILD_VERSION=1
# The debug information names the directory each file was compiled in (DW_AT_comp_dir),
# and vmlinux's build ID is a hash over the whole file, debug sections included; the ID
# stays in the image when the debug sections are stripped. So the work directory's random
# name would make every build's image differ: map it to ".". (A set build time stamp
# also keeps pahole from its parallel, unordered BTF encoding: scripts/Makefile.btf.)
export KCFLAGS="-ffile-prefix-map=$src=." KAFLAGS="-ffile-prefix-map=$src=."
echo "build-kernel: building $(make -s -C "$src" kernelrelease LOCALVERSION=) with $jobs jobs"
make -s -C "$src" -j"$jobs" bzImage LOCALVERSION=

mkdir "$work/out"
cp "$src/arch/x86/boot/bzImage" "$work/out/vmlinuz"
cp "$src/.config" "$work/out/config"
make -s -C "$src" kernelrelease LOCALVERSION= >"$work/out/release"
mv -T "$work/out" "$out"
echo "build-kernel: $(cat "$out/release") in $out"
