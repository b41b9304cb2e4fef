#!/bin/sh
# CI's ABI gate for libvmwkvm.so: compare a build with the committed baseline.
#
#   scripts/abi-check.sh [BUILD_DIR | LIBRARY]     (default: build the library in build-abi)
#
# Fails when
#  - the library's SONAME has no committed baseline abi/<SONAME>.abi (the SONAME changed
#    without a new baseline: run scripts/update-abi.sh and commit it);
#  - abidiff finds an incompatible change against that baseline, or against the baseline
#    of the latest release tag (v*) with the same SONAME: an incompatible change needs a
#    new major version, i.e. a new SONAME and a new baseline;
#  - the exported symbols, the version map and the Debian symbols file disagree.
# Only additions (new functions or variables) count as compatible: they pass, with a note
# that the baseline is behind. Any other change reported by abidiff fails (see
# abi/abi-common.sh for the rule and for accepting reviewed changes).
# The library must carry DWARF debug info (RelWithDebInfo or Debug builds do).
set -eu
VMWKVM_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$VMWKVM_ROOT/abi/abi-common.sh"
need abidw abidiff readelf cmake

if [ $# -ge 1 ]; then
	target=$1
else
	target=$VMWKVM_ROOT/build-abi
	build_lib "$target"
fi
lib=$(find_lib "$target")
has_debug_info "$lib" || die "$lib has no DWARF debug info: build with -g (RelWithDebInfo)"
soname=$(soname_of "$lib")
[ -n "$soname" ] || die "$lib has no SONAME"
baseline=$VMWKVM_ROOT/abi/$soname.abi
pkg=libvmwkvm${soname#libvmwkvm.so.}
[ -f "$baseline" ] || die "no ABI baseline abi/$soname.abi for this SONAME: if the SONAME changed on purpose, run scripts/update-abi.sh and commit the new baseline"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
abi_dump "$lib" "$tmp/build.abi"

status=0
check_against() { # NAME BASELINE_FILE
	rc=0
	abi_compare "$2" "$tmp/build.abi" >"$tmp/report" 2>&1 || rc=$?
	case $rc in
	0) echo "abi-check: $soname matches $1" ;;
	4)
		sed 's/^/  /' "$tmp/report"
		echo "abi-check: compatible additions against $1; run scripts/update-abi.sh to record them"
		;;
	8)
		cat "$tmp/report" >&2
		echo "abi-check: INCOMPATIBLE ABI change against $1 while the SONAME is still $soname." >&2
		echo "abi-check: keep the ABI, or bump the major version (new SONAME) and run scripts/update-abi.sh" >&2
		status=1
		;;
	*)
		cat "$tmp/report" >&2
		echo "abi-check: abidiff failed against $1" >&2
		status=1
		;;
	esac
}
check_against "abi/$soname.abi" "$baseline"

tag=$(git -C "$VMWKVM_ROOT" describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true)
if [ -n "$tag" ] && git -C "$VMWKVM_ROOT" cat-file -e "$tag:abi/$soname.abi" 2>/dev/null; then
	git -C "$VMWKVM_ROOT" show "$tag:abi/$soname.abi" >"$tmp/released.abi"
	check_against "the baseline released as $tag" "$tmp/released.abi"
fi

cmake -DLIB="$lib" -DMAP="$VMWKVM_ROOT/lib/libvmwkvm.map" \
	-DSYMBOLS="$VMWKVM_ROOT/debian/$pkg.symbols" \
	-P "$VMWKVM_ROOT/tests/abi/CheckSymbols.cmake" || status=1
exit $status
