#!/usr/bin/env bash
# Prepares a Debian 12 (bookworm) machine to build and test Kiln: apt sources
# (bookworm-backports, non-free-firmware), the arm64 architecture for kernel
# packages, and the Debian packages the tests need. Idempotent; run as root.
#
#   tools/setup/debian.sh            # everything the tests need
#   PACKAGES_EXTRA="..." tools/setup/debian.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "setup: run as root (it installs Debian packages)" >&2
	exit 1
fi

src=/etc/apt/sources.list.d/debian.sources
kiln=/etc/apt/sources.list.d/kiln-backports.sources
# Copy the archive address and key from the machine's own main entry instead
# of naming a mirror here. bookworm main is already there; add its
# non-free-firmware component and bookworm-backports.
uris=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$src")
signed=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
if [ -z "$uris" ]; then
	echo "setup: no URIs line in $src" >&2
	exit 1
fi
cat >"$kiln.tmp" <<EOT
Types: deb
URIs: $uris
Suites: bookworm
Components: non-free-firmware
Signed-By: ${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}

Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main non-free-firmware
Signed-By: ${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}
EOT
mv "$kiln.tmp" "$kiln"

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	dpkg --add-architecture arm64
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

# Tools the tests check real artifacts with, clang for the BPF programs
# (make generate), QEMU for the end-to-end layer, and iptables/nftables for
# the kube-proxy anchor of make bench-proxy; what building the kernel from
# Debian's source takes (make kernel: gcc, flex, bison, bc, libelf and libssl
# headers, pahole for the kernel's BTF, zstd for its compression).
packages=(
	git make ca-certificates
	clang-19 llvm-19 linux-libc-dev
	gcc libc6-dev libseccomp-dev
	dosfstools e2fsprogs squashfs-tools mtools xorriso fdisk
	ovmf qemu-efi-aarch64
	iptables nftables conntrack
	flex bison bc libelf-dev libssl-dev pahole xz-utils zstd
	${PACKAGES_EXTRA:-}
)
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports \
	qemu-system-x86 qemu-system-arm qemu-utils >/dev/null
echo "setup: Debian packages ready"
