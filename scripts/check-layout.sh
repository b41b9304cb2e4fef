#!/usr/bin/env bash
# Checks the shape of lib/ (issue 13; lib/README.md):
#   1. no file in lib/ is longer than VMWKVM_MAX_LINES lines (default 650);
#   2. nothing in lib/core/ includes a header of a capability directory;
#   3. the include graph between lib/ directories has no cycle;
#   4. the include graph between lib/ files has no cycle (a .c and its .h count as one file);
#   5. given the library's object files (CTest passes them), the call graph between the
#      objects (an undefined symbol of one resolved by another) has no cycle, neither between
#      files nor between directories.
# Usage: scripts/check-layout.sh [object.o ...]      (run as the CTest test layout/check)
# Prints every violation and exits 1 if there is one.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB="$ROOT/lib"
MAX=${VMWKVM_MAX_LINES:-650}
CAPS="probe backdoor policy memfault"
objs=()
for o in "$@"; do
	objs+=("$(realpath "$o")")
done
fail=0
bad() {
	echo "check-layout: $*" >&2
	fail=1
}

# tsort reports a cycle on stderr ("input contains a loop") and prints the members.
cycle_check() { # <what> ; edges "a b" on stdin
	local what=$1 out
	if ! out=$(tsort 2>&1 >/dev/null); then
		bad "cycle in the $what graph:"
		printf '%s\n' "$out" | sed 's/^/    /' >&2
	fi
}

cd "$LIB"
files=$(find . -mindepth 2 -type f \( -name '*.c' -o -name '*.h' -o -name '*.in' \) | sed 's|^\./||' | LC_ALL=C sort)

# 1. file length
for f in $files; do
	n=$(wc -l <"$f")
	if ((n > MAX)); then
		bad "lib/$f has $n lines (at most $MAX)"
	fi
done

# 2. core includes no capability
for cap in $CAPS; do
	if grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]+\"$cap/" core/* >/dev/null 2>&1; then
		bad "lib/core includes a $cap header: $(grep -lE "#[[:space:]]*include[[:space:]]+\"$cap/" core/* | tr '\n' ' ')"
	fi
done

# internal headers are named with their directory
if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^/"]+"' $files >/dev/null; then
	bad "an internal include without its directory (write \"core/internal.h\", not \"internal.h\"):"
	grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^/"]+"' $files | sed 's/^/    lib\//' >&2
fi

# 3 and 4. include graphs: "dir/file.c:#include "dir2/hdr.h"" -> edges
includes=$(grep -HE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[a-z_]+/[^"]+"' $files |
	sed -E 's|^([^:]+):[[:space:]]*#[[:space:]]*include[[:space:]]+"([^"]+)".*|\1 \2|')
{
	echo "$includes" | awk 'NF==2 { split($1, a, "/"); split($2, b, "/"); if (a[1] != b[1]) print a[1], b[1] }'
	for d in core $CAPS; do echo "$d $d"; done
} | cycle_check "directory include"
echo "$includes" | awk 'NF==2 { sub(/\.(c|h|h\.in)$/, "", $1); sub(/\.(c|h|h\.in)$/, "", $2); if ($1 != $2) print $1, $2 }' |
	cycle_check "file include"

# 5. object call graph
if ((${#objs[@]} > 0)); then
	NM=${NM:-nm}
	defs=$(mktemp)
	undefs=$(mktemp)
	trap 'rm -f "$defs" "$undefs"' EXIT
	for o in "${objs[@]}"; do
		# lib/CMakeFiles/vmwkvm_obj.dir/<dir>/<file>.c.o -> <dir>/<file>
		name=$(echo "$o" | sed -E 's|.*/vmwkvm_obj\.dir/||; s|\.c\.o$||; s|\.o$||')
		"$NM" "$o" | awk -v n="$name" '$1 == "U" { print $2, n >> "'"$undefs"'"; next }
			NF == 3 && $2 ~ /^[TDBRV]$/ { print $3, n }' >>"$defs"
	done
	edges=$(awk 'NR == FNR { def[$1] = $2; next } ($1 in def) && def[$1] != $2 { print $2, def[$1] }' \
		"$defs" "$undefs" | LC_ALL=C sort -u)
	echo "$edges" | cycle_check "file call"
	echo "$edges" | awk '{ split($1, a, "/"); split($2, b, "/"); if (a[1] != b[1]) print a[1], b[1] }' |
		cycle_check "directory call"
fi

if ((fail)); then
	exit 1
fi
echo "check-layout: lib/ is in shape ($(echo "$files" | wc -l) files, at most $MAX lines each, no include or call cycle)"
