#!/bin/sh
# The demonstration's steps, run by scripts/demo.sh on this machine or inside the nested KVM
# (POSIX sh: the nested guest has busybox). Usage: demo-steps.sh BUILD_DIR [minivmm options...]
set -u
b="$1"
shift
echo "==== vmwkvm-probe (what this kernel offers)"
"$b/tools/probe/vmwkvm-probe" || true
echo "==== vmwkvm-minivmm --guest $b/guests/minivmm_demo.bin"
dump="${TMPDIR:-/tmp}/vmwkvm-demo-guestinfo.$$"
rc=0
"$b/examples/minivmm/vmwkvm-minivmm" --guest "$b/guests/minivmm_demo.bin" --guestinfo-dump "$dump" "$@" || rc=$?
if [ "$rc" -eq 0 ]; then
	echo "==== guestinfo store at exit"
	cat "$dump"
fi
rm -f "$dump"
exit "$rc"
