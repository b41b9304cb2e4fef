# shellcheck shell=sh
# Shared by scripts/abi-check.sh and scripts/update-abi.sh (sourced, not run; they set
# VMWKVM_ROOT first).
# The ABI description of libvmwkvm is libabigail's abidw output restricted to the types
# declared in the public headers, without source locations or build paths, so that it
# only changes when the ABI does.

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

need() {
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || die "$t not found (Debian: apt-get install abigail-tools binutils)"
	done
}

# build_lib BUILD_DIR: configure (RelWithDebInfo: abidw needs DWARF) and build only the library
build_lib() {
	cmake -S "$VMWKVM_ROOT" -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DVMWKVM_BUILD_TESTS=OFF -DVMWKVM_BUILD_EXAMPLES=OFF -DVMWKVM_BUILD_BENCH=OFF >/dev/null ||
		die "cmake configure of $1 failed"
	cmake --build "$1" --target vmwkvm -j 2 >/dev/null || die "building libvmwkvm in $1 failed"
}

# find_lib PATH: a build directory or a library file -> the real library file on stdout
find_lib() {
	if [ -d "$1" ]; then
		for f in "$1"/lib/libvmwkvm.so "$1"/libvmwkvm.so; do
			[ -e "$f" ] && { readlink -f "$f"; return 0; }
		done
		die "no libvmwkvm.so in $1 (build it first, or give the library file)"
	fi
	[ -e "$1" ] || die "$1 does not exist"
	readlink -f "$1"
}

# soname_of LIB
soname_of() {
	LC_ALL=C readelf -d "$1" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p'
}

# has_debug_info LIB
has_debug_info() {
	LC_ALL=C readelf -S "$1" | grep -q '\.debug_info'
}

# abi_dump LIB OUT: the ABI description of LIB
abi_dump() {
	# the generated version.h lives in the build tree; it declares no types, only macros
	abidw --headers-dir "$VMWKVM_ROOT/include/vmwkvm" \
		--drop-private-types --no-corpus-path --no-comp-dir-path --no-show-locs \
		--type-id-style hash --exported-interfaces-only --out-file "$2" "$1" || die "abidw failed on $1"
}

# abi_compare OLD.abi NEW.abi: prints abidiff's report and returns
#   0 no change, 4 compatible additions only (new functions or variables),
#   8 any other ABI change (removed symbols, changed types or signatures), 1 abidiff failed.
# abidiff itself sets its "incompatible" bit only for removals and reports type changes
# (a struct that grew, a field that moved) as plain changes, so the gate is: anything
# left after ignoring added symbols is a break. Harmless changes (for example a new
# enumerator) are filtered by abidiff by default; abi/libvmwkvm.abignore, if present, is
# a libabigail suppression file for changes reviewed and accepted as compatible.
abi_compare() {
	supp=$VMWKVM_ROOT/abi/libvmwkvm.abignore
	rest=0
	all=0
	if [ -f "$supp" ]; then
		abidiff --suppressions "$supp" --no-added-syms "$1" "$2" >/dev/null 2>&1 || rest=$?
		abidiff --suppressions "$supp" "$1" "$2" || all=$?
	else
		abidiff --no-added-syms "$1" "$2" >/dev/null 2>&1 || rest=$?
		abidiff "$1" "$2" || all=$?
	fi
	if [ $((rest & 3)) -ne 0 ] || [ $((all & 3)) -ne 0 ]; then
		return 1
	elif [ "$rest" -ne 0 ]; then
		return 8
	elif [ "$all" -ne 0 ]; then
		return 4
	fi
	return 0
}
