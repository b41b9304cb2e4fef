#!/bin/sh
# Regenerate, in one command, everything that records libvmwkvm's ABI:
#   abi/<SONAME>.abi               libabigail description of the library (public types only)
#   debian/libvmwkvm<N>.symbols    Debian symbols file, from the version map lib/libvmwkvm.map
# Run it after adding, removing or changing anything exported, and commit both files.
#
#   scripts/update-abi.sh [--allow-break] [BUILD_DIR]      (default BUILD_DIR: build-abi)
#
# It builds the library (RelWithDebInfo) in BUILD_DIR. If a release tag (v*) already
# holds a baseline for the same SONAME, an incompatible change is refused: bump the major
# version (and so the SONAME) instead, or pass --allow-break if you really mean to break
# a released ABI without changing the SONAME (never for a library that was shipped).
set -eu
VMWKVM_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$VMWKVM_ROOT/abi/abi-common.sh"

allow_break=0
if [ "${1:-}" = "--allow-break" ]; then
	allow_break=1
	shift
fi
build=${1:-$VMWKVM_ROOT/build-abi}
need cmake abidw abidiff readelf git

build_lib "$build"
lib=$(find_lib "$build")
has_debug_info "$lib" || die "$lib has no DWARF debug info: abidw needs -g"
soname=$(soname_of "$lib")
[ -n "$soname" ] || die "$lib has no SONAME"
major=${soname#libvmwkvm.so.}
pkg=libvmwkvm$major
baseline=$VMWKVM_ROOT/abi/$soname.abi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

abi_dump "$lib" "$tmp/new.abi"

# a released baseline for this SONAME must stay compatible
tag=$(git -C "$VMWKVM_ROOT" describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
if [ -n "$tag" ] && git -C "$VMWKVM_ROOT" cat-file -e "$tag:abi/$soname.abi" 2>/dev/null; then
	git -C "$VMWKVM_ROOT" show "$tag:abi/$soname.abi" >"$tmp/released.abi"
	rc=0
	abi_compare "$tmp/released.abi" "$tmp/new.abi" >"$tmp/report" || rc=$?
	if [ $rc -eq 1 ]; then
		cat "$tmp/report" >&2
		die "abidiff failed against the baseline released as $tag"
	fi
	if [ $rc -eq 8 ] && [ $allow_break -eq 0 ]; then
		cat "$tmp/report" >&2
		die "incompatible with the ABI released as $tag; bump the major version (SONAME) in CMakeLists.txt instead"
	fi
fi

if [ -f "$baseline" ]; then
	rc=0
	abi_compare "$baseline" "$tmp/new.abi" >"$tmp/report" || rc=$?
	if [ $rc -eq 0 ]; then
		# no ABI difference: keep the file, so that a rebuild that only reorders the
		# description does not show up as a change
		echo "abi/$soname.abi: unchanged"
	else
		echo "abi/$soname.abi: updated ($( [ $rc -eq 4 ] && echo additions only || echo "CHANGED, status $rc" )):"
		sed 's/^/  /' "$tmp/report"
		cp "$tmp/new.abi" "$baseline"
	fi
else
	echo "abi/$soname.abi: new baseline"
	cp "$tmp/new.abi" "$baseline"
fi

# Debian symbols file: one entry per exported symbol and per version node; the minimum
# version of a symbol is the version of its node (VMWKVM_X.Y -> X.Y.0).
symbols=$VMWKVM_ROOT/debian/$pkg.symbols
{
	echo "$soname $pkg #MINVER#"
	echo "* Build-Depends-Package: libvmwkvm-dev"
	awk '
		{ sub(/#.*/, "") }
		/^[ \t]*[A-Za-z_][A-Za-z0-9_.]*[ \t]*\{/ {
			node = $1; sub(/\{.*/, "", node); print node "@" node; global = 1; next
		}
		/^[ \t]*\}/ { node = ""; next }
		/local:/ { global = 0; next }
		/global:/ { global = 1; next }
		global && node != "" && /^[ \t]*[A-Za-z_][A-Za-z0-9_]*[ \t]*;/ {
			s = $1; sub(/;.*/, "", s); print s "@" node
		}
	' "$VMWKVM_ROOT/lib/libvmwkvm.map" | LC_ALL=C sort -u | while IFS=@ read -r sym node; do
		ver=${node#VMWKVM_}
		case $ver in *.*.*) ;; *) ver=$ver.0 ;; esac
		echo " $sym@$node $ver"
	done
} >"$tmp/symbols"
if [ -f "$symbols" ] && cmp -s "$tmp/symbols" "$symbols"; then
	echo "debian/$pkg.symbols: unchanged"
else
	cp "$tmp/symbols" "$symbols"
	echo "debian/$pkg.symbols: written ($(($(wc -l <"$symbols") - 2)) entries)"
fi
grep -q "^Package: $pkg\$" "$VMWKVM_ROOT/debian/control" ||
	echo "WARNING: debian/control has no package $pkg for SONAME $soname: rename the library package" >&2

# the three lists must now agree
cmake -DLIB="$lib" -DMAP="$VMWKVM_ROOT/lib/libvmwkvm.map" -DSYMBOLS="$symbols" \
	-P "$VMWKVM_ROOT/tests/abi/CheckSymbols.cmake"
echo "done: commit abi/$soname.abi and debian/$pkg.symbols"
