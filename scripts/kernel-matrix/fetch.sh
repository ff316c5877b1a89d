#!/usr/bin/env bash
# Downloads what the kernel matrix boots: Debian's stock kernels (bullseye,
# bookworm, trixie and sid, amd64 and arm64) and a small guest userland per
# arch (busybox, iproute2, ethtool) from bookworm. Everything is cached under
# $PF_CACHE_DIR (default /var/cache/pf-sidecar); a second run downloads
# nothing. Uses a private apt state, so the host's own apt setup (sources,
# architectures, lists) is never changed.
#
# Usage: fetch.sh [SUITE/ARCH ...]   (default: every guest of the matrix)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/kernel-matrix/guests.sh
. "$here/guests.sh"

cache=${PF_CACHE_DIR:-/var/cache/pf-sidecar}
aptroot=$cache/apt
debs=$cache/debs
mkdir -p "$debs"

die() { printf 'fetch.sh: error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror the host already uses, read from its own sources.
mirror() {
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
  printf '%s\n' "${uri%/}"
}

apt_opts=(
  -o "Dir::State=$aptroot/state" -o "Dir::State::status=$aptroot/state/status"
  -o "Dir::Cache=$aptroot/cache" -o "Dir::Etc::sourcelist=$aptroot/sources.list"
  -o "Dir::Etc::sourceparts=-" -o "Dir::Etc::preferencesparts=-"
  -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64"
  -o "Acquire::Check-Valid-Until=false" -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
  -o "APT::Get::List-Cleanup=false" -q
)

apt_update() {
  mkdir -p "$aptroot/state/lists/partial" "$aptroot/cache/archives/partial"
  touch "$aptroot/state/status"
  # `suite` is local: bash scoping is dynamic, and fetch_kernel (which gets
  # here on a fresh cache) has a `suite` of its own that this loop would
  # overwrite, caching sid's kernel under the first guest's name.
  local m suite
  m=$(mirror)
  {
    for suite in bullseye bookworm trixie sid; do
      echo "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $m $suite main"
    done
  } > "$aptroot/sources.list"
  echo "==> apt index of bullseye, bookworm, trixie and sid (private state in $aptroot)"
  apt-get "${apt_opts[@]}" update >"$cache/apt-update.log" 2>&1 \
    || { tail -20 "$cache/apt-update.log" >&2; die "apt-get update failed (log: $cache/apt-update.log)"; }
  touch "$aptroot/updated"
}

ensure_index() {
  [ -f "$aptroot/updated" ] || apt_update
}

# The newest version of PACKAGE:ARCH in SUITE, from the private index.
version_in() {
  local pkg=$1 arch=$2 suite=$3
  apt-cache "${apt_opts[@]}" madison "$pkg:$arch" 2>/dev/null \
    | awk -F'|' -v s=" $suite/main $arch " 'index($3, s) {gsub(/ /, "", $2); print $2; exit}'
}

# Downloads PACKAGE:ARCH=VERSION into $debs (once) and prints the path.
download() {
  local pkg=$1 arch=$2 version=$3 file
  file=$(ls "$debs/${pkg}_"*"_${arch}.deb" 2>/dev/null | grep -F "_${version//:/%3a}_" | head -1 || true)
  if [ -z "$file" ]; then
    (cd "$debs" && apt-get "${apt_opts[@]}" download "$pkg:$arch=$version" >>"$cache/apt-download.log" 2>&1) \
      || return 1
    file=$(ls -t "$debs/${pkg}_"*"_${arch}.deb" | head -1)
  fi
  printf '%s\n' "$file"
}

# Extracts a kernel deb's vmlinuz and the modules the guests load.
extract_kernel() {
  dpkg-deb --fsys-tarfile "$1" | tar xf - -C "$2" --wildcards --no-anchored \
    'vmlinuz-*' '*/vmlinuz' '*/veth.ko*' '*/vrf.ko*' '*/bonding/*' '*/8021q/*' '*/net/802/*' '*/llc/*' '*/net/tls/*' \
    2>/dev/null || true
}

# The kernel package a suite's metapackage (linux-image-ARCH) points at; when
# the mirror lacks its pool file, older ABIs still in the index are tried.
fetch_kernel() {
  local suite=$1 arch=$2
  local dest=$cache/kernels/$suite-$arch
  local requested=$suite/$arch
  if [ -f "$dest/release" ]; then
    echo "    cached: $suite/$arch $(cat "$dest/release")"
    return 0
  fi
  ensure_index
  local meta_version candidates pkg version deb=""
  meta_version=$(version_in "linux-image-$arch" "$arch" "$suite")
  [ -n "$meta_version" ] || die "no linux-image-$arch in $suite"
  candidates=$(apt-cache "${apt_opts[@]}" show "linux-image-$arch:$arch=$meta_version" \
    | awk -F': ' '/^Depends:/ {print $2; exit}' | tr ',' '\n' \
    | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
  [ -n "$candidates" ] || die "cannot resolve linux-image-$arch in $suite"
  # Same flavour, older ABIs of the same series, newest first.
  local series=${candidates#linux-image-}; series=${series%%-*}
  local older
  older=$(apt-cache "${apt_opts[@]}" pkgnames "linux-image-$series" 2>/dev/null \
    | grep -E "^linux-image-$series\.0-[0-9]+-$arch(-unsigned)?$" | sort -t- -k4,4nr -u || true)
  for pkg in $candidates $older; do
    version=$(version_in "$pkg" "$arch" "$suite")
    [ -n "$version" ] || continue
    if deb=$(download "$pkg" "$arch" "$version"); then
      break
    fi
    echo "    $pkg $version: not downloadable from the mirror, trying an older one"
    deb=""
  done
  [ -n "$deb" ] || die "no downloadable kernel for $suite/$arch"
  [ "$suite/$arch" = "$requested" ] || die "fetching $requested turned into $suite/$arch"
  local tmp
  tmp=$(mktemp -d)
  extract_kernel "$deb" "$tmp"
  # Newer kernels (sid) split the image into linux-binary-* and linux-modules-*.
  local part
  for part in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' \
      | sed -n 's/^ *\(linux-\(binary\|modules\)-[^ ]*\).*/\1/p'); do
    extract_kernel "$(download "$part" "$arch" "$version")" "$tmp" || die "cannot download $part"
  done
  local vmlinuz release
  vmlinuz=$(find "$tmp" \( -name 'vmlinuz-*' -o -name vmlinuz \) -type f | head -1)
  [ -n "$vmlinuz" ] || die "no vmlinuz in $deb"
  release=$(basename "$(dirname "$(find "$tmp" -path '*/modules/*/kernel' -type d | head -1)")")
  # Never cache another series' kernel under this suite's name.
  case $release in
    "$series"*) ;;
    *) rm -rf "$tmp"; die "$suite/$arch resolved to $pkg ($deb) but it holds kernel $release, not $series" ;;
  esac
  mkdir -p "$dest.part"
  cp "$vmlinuz" "$dest.part/vmlinuz"
  # Only what the guests load: the modules below and their dependencies.
  local moddir=$tmp/lib/modules/$release
  [ -d "$moddir" ] || moddir=$tmp/usr/lib/modules/$release
  cp -r "$moddir/kernel" "$dest.part/"
  echo "$release" > "$dest.part/release"
  basename "$deb" > "$dest.part/package"
  rm -rf "$tmp" "$dest"
  mv "$dest.part" "$dest"
  echo "    $suite/$arch: $release ($(cat "$dest/package"))"
}

# busybox, ip and ethtool with their libraries, from bookworm.
fetch_userland() {
  local arch=$1
  local dest=$cache/userland/$arch
  if [ -f "$dest/.complete" ]; then
    echo "    cached: userland/$arch"
    return 0
  fi
  ensure_index
  rm -rf "$dest"
  mkdir -p "$dest"
  local pkg version deb
  for pkg in $GUEST_PACKAGES; do
    version=$(version_in "$pkg" "$arch" bookworm)
    [ -n "$version" ] || die "no $pkg:$arch in bookworm"
    deb=$(download "$pkg" "$arch" "$version") || die "cannot download $pkg:$arch $version"
    dpkg-deb -x "$deb" "$dest"
  done
  touch "$dest/.complete"
  echo "    userland/$arch: $GUEST_PACKAGES"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${GUESTS[@]}")
echo "==> kernels and guest userland (cache: $cache)"
declare -A arches=()
for t in "${targets[@]}"; do
  fetch_kernel "${t%/*}" "${t#*/}"
  arches[${t#*/}]=1
done
for a in "${!arches[@]}"; do
  fetch_userland "$a"
done
