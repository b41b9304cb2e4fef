#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# refkvm/build.sh: build the reference KVM modules (kvm.ko, kvm-amd.ko) = Debian's
# bookworm-backports 6.12 KVM with refkvm/patches/*.patch applied, out of tree against
# the matching linux-headers package, for the kernel scripts/nested-kvm/run-in-qemu.sh
# boots with --kernel-suite backports. Nothing is installed on the host: the packages
# are downloaded with apt-get through a private apt configuration in the cache
# directory (the one run-in-qemu.sh uses) and unpacked there.
#
# The built modules are cached in <cache>/refkvm/modules-<kernel>-<hash>/, keyed by the
# patches, this script and the -D numbers; a second run with the same inputs rebuilds
# nothing. The last line on stdout is that directory.
#
# Usage: refkvm/build.sh [--cache DIR] [--offline] [-j N] [-D NAME=VALUE]... [--force]
#   -D REFKVM_CAP_X86_VMWARE=950   override one of the build-time uAPI numbers
#                                  (names in refkvm/README.md)
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${VMWKVM_NESTED_CACHE:-/var/tmp/vmwkvm-nested-kvm}
OFFLINE=0
FORCE=0
JOBS=2
DEFINES=()

die() { echo "refkvm/build: $*" >&2; exit 2; }
log() { echo "refkvm/build: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--cache) CACHE_DIR=$2; shift 2 ;;
	--offline) OFFLINE=1; shift ;;
	--force) FORCE=1; shift ;;
	-j) JOBS=$2; shift 2 ;;
	-D) DEFINES+=("$2"); shift 2 ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) die "unknown option: $1" ;;
	esac
done
for d in "${DEFINES[@]}"; do
	[[ "$d" =~ ^REFKVM_[A-Z0-9_]+=[0-9]+$ ]] || die "bad -D $d (want REFKVM_NAME=number)"
done

for t in apt-get apt-cache dpkg-deb dpkg make xz objcopy sha256sum patch; do
	command -v "$t" >/dev/null 2>&1 || die "missing host tool $t"
done
command -v x86_64-linux-gnu-gcc-12 >/dev/null 2>&1 || die "missing x86_64-linux-gnu-gcc-12 (apt-get install gcc-12)"

mkdir -p "$CACHE_DIR/refkvm"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
T0=$SECONDS

# ------------------------------------------------------------ apt (private, backports)
APTDIR="$CACHE_DIR/apt-backports"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
	>"$APTDIR/sources.list"
O=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR" -o APT::Sandbox::User=root)

# The kernel: the one run-in-qemu.sh boots for --kernel-suite backports (its pin file),
# else the newest backports cloud image.
PIN="$CACHE_DIR/current-backports-cloud"
IMGDIR=""
if [ -f "$PIN" ] && [ -f "$(cat "$PIN")/.done" ]; then
	IMGDIR=$(cat "$PIN")
elif [ "$OFFLINE" = 0 ]; then
	apt-get "${O[@]}" update -qq >&2 || log "apt-get update failed; trying the cache"
	pkg=$(apt-cache "${O[@]}" depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
	[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 in bookworm-backports"
	IMGDIR="$CACHE_DIR/$pkg"
	if [ ! -f "$IMGDIR/.done" ]; then
		log "downloading $pkg"
		rm -rf "$IMGDIR" && mkdir -p "$IMGDIR/deb"
		(cd "$IMGDIR/deb" && apt-get "${O[@]}" download "$pkg" >&2)
		dpkg -x "$IMGDIR"/deb/*.deb "$IMGDIR"
		rm -f "$IMGDIR"/deb/*.deb
		touch "$IMGDIR/.done"
	fi
	echo "$IMGDIR" >"$PIN"
else
	die "offline and no backports kernel in $CACHE_DIR"
fi
KVER=$(basename "$(ls -d "$IMGDIR"/lib/modules/* | head -1)")   # 6.12.95+deb12-cloud-amd64
BASE=${KVER%-cloud-amd64}                                        # 6.12.95+deb12
SERIES=$(echo "$KVER" | cut -d. -f1-2)                           # 6.12
STOCK_KVM=$(find "$IMGDIR/lib/modules/$KVER" -name 'kvm.ko*' | head -1)
[ -n "$STOCK_KVM" ] || die "no kvm.ko in $IMGDIR"

# ------------------------------------------------------------ headers + source
KDIR="$CACHE_DIR/refkvm/kernel-$KVER"
if [ ! -f "$KDIR/.done" ]; then
	[ "$OFFLINE" = 0 ] || die "offline and no headers/source for $KVER in $KDIR"
	log "downloading headers and linux-source-$SERIES for $KVER"
	rm -rf "$KDIR" && mkdir -p "$KDIR/deb" "$KDIR/root" "$KDIR/src"
	[ -f "$APTDIR/lists/lock" ] || apt-get "${O[@]}" update -qq >&2 || true
	IMGVER=$(apt-cache "${O[@]}" show "linux-image-$KVER" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
	[ -n "$IMGVER" ] || die "cannot find the version of linux-image-$KVER"
	(cd "$KDIR/deb" && apt-get "${O[@]}" download "linux-headers-$KVER=$IMGVER" \
		"linux-headers-$BASE-common=$IMGVER" "linux-kbuild-$BASE=$IMGVER" \
		"linux-source-$SERIES=$IMGVER" >&2)
	for d in "$KDIR"/deb/linux-headers-*.deb "$KDIR"/deb/linux-kbuild-*.deb; do
		dpkg -x "$d" "$KDIR/root"
	done
	# the headers' Makefile includes the common tree by absolute path
	sed -i "s|^include /usr/src/|include $KDIR/root/usr/src/|" "$KDIR/root/usr/src/linux-headers-$KVER/Makefile"
	# only what the patch touches and arch/x86/kvm needs
	dpkg-deb --fsys-tarfile "$KDIR"/deb/linux-source-*.deb |
		tar -xO "./usr/src/linux-source-$SERIES.tar.xz" |
		tar -xJ -C "$KDIR/src" --strip-components=1 \
			"linux-source-$SERIES/arch/x86/kvm" "linux-source-$SERIES/virt/kvm" \
			"linux-source-$SERIES/arch/x86/include/asm/kvm_host.h"
	rm -rf "$KDIR/deb"
	touch "$KDIR/.done"
fi
HDR="$KDIR/root/usr/src/linux-headers-$KVER"

# ------------------------------------------------------------ cache key
HASH=$( { cat "$SELF_DIR"/patches/*.patch "$SELF_DIR/build.sh"; echo "$KVER"; printf '%s\n' "${DEFINES[@]}"; } |
	sha256sum | cut -c1-16)
OUT="$CACHE_DIR/refkvm/modules-$KVER-$HASH"
if [ "$FORCE" = 0 ] && [ -f "$OUT/.done" ]; then
	log "cached: $OUT (built in $(cat "$OUT/build-seconds") s)"
	echo "$OUT"
	exit 0
fi

# ------------------------------------------------------------ build
B=$(mktemp -d "$CACHE_DIR/refkvm/build.XXXXXX")
trap 'rm -rf "$B"' EXIT
mkdir -p "$B/arch/x86/include/asm" "$B/virt" "$B/include/trace"
cp -a "$KDIR/src/arch/x86/kvm" "$B/arch/x86/"
cp -a "$KDIR/src/virt/kvm" "$B/virt/"
cp "$KDIR/src/arch/x86/include/asm/kvm_host.h" "$B/arch/x86/include/asm/"
for p in "$SELF_DIR"/patches/*.patch; do
	(cd "$B" && patch -p1 -s --no-backup-if-mismatch <"$p") || die "patch $(basename "$p") does not apply to $KVER"
done
# Out-of-tree plumbing: sources are in $B, not in the headers' srctree. The patched
# asm/kvm_host.h is found before the headers' copy (NOSTDINC_FLAGS comes first on the
# compiler line); trace.h's TRACE_INCLUDE_PATH (../../arch/x86/kvm) resolves against
# $B/include/trace.
sed -i -e 's|-I \$(srctree)/arch/x86/kvm|-I $(src) -I $(src)/../../../include/trace|' \
       -e 's|include \$(srctree)/virt/kvm/Makefile.kvm|include $(src)/../../../virt/kvm/Makefile.kvm|' \
	"$B/arch/x86/kvm/Makefile"
echo 'obj-m += arch/x86/kvm/' >"$B/Kbuild"
EXTRA=""
for d in "${DEFINES[@]}"; do EXTRA="$EXTRA -D$d"; done
log "building kvm.ko + kvm-amd.ko for $KVER (-j$JOBS)"
t=$SECONDS
# BTF for modules needs pahole; these test modules go without it. kvm-intel is not built
# (the nested guest is AMD SVM only, and the patch touches only SVM).
if ! make -C "$HDR" M="$B" -j"$JOBS" \
	NOSTDINC_FLAGS="-I$B/arch/x86/include" KCFLAGS="$EXTRA" \
	CONFIG_DEBUG_INFO_BTF_MODULES= CONFIG_KVM_INTEL= modules >"$B/build.log" 2>&1; then
	tail -40 "$B/build.log" >&2
	die "build failed"
fi
BUILD_S=$((SECONDS - t))
grep -E 'warning:' "$B/build.log" >&2 || true

vermagic() {
	case "$1" in *.xz) xz -dc "$1" ;; *) cat "$1" ;; esac >"$B/vm.ko"
	objcopy -O binary --only-section=.modinfo "$B/vm.ko" /dev/stdout | tr '\0' '\n' | sed -n 's/^vermagic=//p'
}
WANT=$(vermagic "$STOCK_KVM")
for m in kvm kvm-amd; do
	got=$(vermagic "$B/arch/x86/kvm/$m.ko")
	[ "$got" = "$WANT" ] || die "$m.ko vermagic '$got' does not match the image's '$WANT'"
done
rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
cp "$B/arch/x86/kvm/kvm.ko" "$B/arch/x86/kvm/kvm-amd.ko" "$B/build.log" "$OUT.tmp/"
echo "$WANT" >"$OUT.tmp/vermagic"
echo "$BUILD_S" >"$OUT.tmp/build-seconds"
printf '%s\n' "${DEFINES[@]}" >"$OUT.tmp/defines"
touch "$OUT.tmp/.done"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
# keep the three newest builds (other patch versions or numbers) of this kernel
ls -dt "$CACHE_DIR/refkvm/modules-$KVER-"* 2>/dev/null | grep -v '\.tmp$' | tail -n +4 | xargs -r rm -rf
log "built in $BUILD_S s (whole script $((SECONDS - T0)) s); vermagic '$WANT' matches the image"
echo "$OUT"
