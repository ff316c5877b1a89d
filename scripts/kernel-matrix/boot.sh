#!/usr/bin/env bash
# Boots one guest of the kernel matrix under qemu (TCG) and writes its
# console to OUT. The initramfs holds busybox, iproute2 and ethtool (from
# bookworm), the kernel's own veth/8021q/bonding/vrf modules, the static
# pf-sidecar for the arch, and optionally the datapath test binary.
#
# Usage: boot.sh SUITE/ARCH OUT
# The binaries come from target/kernel-matrix/bin (scripts/kernel-matrix/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${1:?usage: boot.sh SUITE/ARCH OUT}
out=${2:?console output file}
suite=${target%/*}
arch=${target#*/}
cache=${PF_CACHE_DIR:-/var/cache/pf-sidecar}
bin=$here/../../target/kernel-matrix/bin
sidecar=$bin/pf-sidecar-$arch
datapath=$bin/datapath-cases-$arch
capture=$bin/frame-capture-$arch
kernel=$cache/kernels/$suite-$arch
userland=$cache/userland/$arch
timeout_s=${PF_GUEST_TIMEOUT_S:-420}

die() { printf 'boot.sh: error: %s\n' "$*" >&2; exit 2; }
[ -f "$kernel/vmlinuz" ] || die "$target is not fetched: run scripts/kernel-matrix/fetch.sh $target"
[ -f "$userland/.complete" ] || die "userland/$arch is not fetched: run scripts/kernel-matrix/fetch.sh"
for f in "$sidecar" "$datapath" "$capture" "$bin/xdp_pass.o"; do
  [ -f "$f" ] || die "$f is missing: run scripts/kernel-matrix/build.sh"
done

strip=$(command -v llvm-strip-22 || true)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/modules"
cp -a "$userland/." "$root/"
rm -f "$root/.complete"
# usr-merge the layout so /bin, /sbin and /lib resolve as on a Debian system.
for d in bin sbin lib lib64; do
  if [ -d "$root/usr/$d" ] && [ ! -L "$root/usr/$d" ]; then
    mkdir -p "$root/$d"
    cp -a "$root/usr/$d/." "$root/$d/"
    rm -rf "${root:?}/usr/$d"
    ln -s "../$d" "$root/usr/$d"
  fi
done
install -m 0755 "$here/guest-init.sh" "$root/init"
install -m 0755 "$sidecar" "$root/bin/pf-sidecar"
install -m 0755 "$datapath" "$root/bin/datapath-cases"
install -m 0755 "$capture" "$root/bin/frame-capture"
install -m 0644 "$bin/xdp_pass.o" "$root/xdp_pass.o"
if [ -n "$strip" ]; then
  "$strip" --strip-all "$root/bin/pf-sidecar" "$root/bin/datapath-cases" "$root/bin/frame-capture"
fi

# Modules in load order: each one's dependencies (modinfo's depends field)
# before it. Compressed modules are unpacked here, so insmod needs no xz.
modsrc=$kernel/kernel
: > "$root/modules.list"
declare -A loaded=()
find_module() {
  find "$modsrc" -name "$1.ko*" | head -1
}
add_module() {
  local name=$1 file plain dep
  [ -z "${loaded[$name]:-}" ] || return 0
  loaded[$name]=1
  file=$(find_module "$name")
  [ -n "$file" ] || { echo "    (module $name not in $target: built in or absent)"; return 0; }
  plain=$work/$name.ko
  case $file in
    *.xz) xz -dc "$file" > "$plain" ;;
    *.zst) zstd -qdc "$file" > "$plain" ;;
    *.gz) gzip -dc "$file" > "$plain" ;;
    *) cp "$file" "$plain" ;;
  esac
  for dep in $(tr '\0' '\n' < "$plain" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '); do
    add_module "$dep"
  done
  cp "$plain" "$root/modules/$name.ko"
  echo "$name.ko" >> "$root/modules.list"
}
for m in ${PF_GUEST_MODULES:-veth 8021q bonding vrf}; do
  add_module "$m"
done

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$work/initrd.gz"

append="quiet loglevel=1 panic=-1 rdinit=/init"
case $arch in
  amd64)
    qemu=(qemu-system-x86_64 -machine q35 -cpu max -m 1024 -smp 1
      -append "console=ttyS0 $append") ;;
  arm64)
    qemu=(qemu-system-aarch64 -machine virt -cpu cortex-a57 -m 1024 -smp 1
      -append "console=ttyAMA0 $append") ;;
  *) die "unknown arch $arch" ;;
esac
mkdir -p "$(dirname "$out")"
start=$(date +%s)
rc=0
timeout --foreground "$timeout_s" "${qemu[@]}" -accel tcg -nodefaults -display none -no-reboot \
  -serial stdio -kernel "$kernel/vmlinuz" -initrd "$work/initrd.gz" \
  </dev/null >"$out" 2>&1 || rc=$?
echo "PFM|guest|$rc|seconds=$(( $(date +%s) - start )) release=$(cat "$kernel/release")" >> "$out"
