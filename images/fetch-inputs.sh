#!/usr/bin/env bash
# fetch-inputs.sh: download the Debian packages pinned in images/inputs.lock into a cache
# directory (default _out/cache) with apt-get download, then verify every sha256.
#
#   images/fetch-inputs.sh [CACHE_DIR]
#
# With KILN_SETUP_APT=1 (and as root) it first runs tools/setup/debian.sh, which adds
# bookworm-backports and non-free-firmware and enables the arm64 architecture.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
lock="$here/inputs/inputs.lock"
cache="${1:-$here/../_out/cache}"

if [ "${KILN_SETUP_APT:-0}" = 1 ]; then
	# apt sources (bookworm-backports, non-free-firmware), arm64, packages.
	"$here/../tools/setup/debian.sh"
fi

mkdir -p "$cache"
cd "$cache"
# Lock lines: name arch version sha256 filename
grep -v '^#' "$lock" | while read -r name arch version sum file; do
	[ -n "${name:-}" ] || continue
	if [ -f "$file" ] && echo "$sum  $file" | sha256sum -c --status; then
		continue
	fi
	rm -f "$file"
	spec="$name:$arch=$version"
	[ "$arch" = all ] && spec="$name=$version"
	echo "fetch-inputs: apt-get download $spec"
	apt-get download -q "$spec" 2> >(grep -v '^W: ' >&2)
	if [ ! -f "$file" ]; then
		echo "fetch-inputs: $name:$arch=$version: apt-get did not write $file" >&2
		exit 1
	fi
	if ! echo "$sum  $file" | sha256sum -c --status; then
		echo "fetch-inputs: $name:$arch=$version: sha256 of $file is $(sha256sum "$file" | cut -d' ' -f1), lock says $sum" >&2
		exit 1
	fi
done
echo "fetch-inputs: inputs in $cache verified"
