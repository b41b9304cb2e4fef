#!/bin/sh
# Format a manual page with groff and fail on any warning or error (as lintian would).
# Usage: check_man.sh GROFF PAGE
out=$("$1" -man -ww -z -Tutf8 -t "$2" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
	echo "$out"
	exit 1
fi
grep -q '^\.SH NAME$' "$2" || { echo "$2: no NAME section"; exit 1; }
echo "ok: $2 formats without warnings"
