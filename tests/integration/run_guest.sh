#!/bin/sh
# Run vmwkvm-minivmm once and check what it did: exit status, console output (stdout),
# messages (stderr) and the --guestinfo-dump file.
#
# Usage: run_guest.sh [CHECK...] -- VMM [VMM-ARGS...]
#   --name NAME           test name (work files go to $WORKDIR/NAME.*; default "run")
#   --workdir DIR         where to keep stdout, stderr and the dump (default: a temp dir)
#   --needs-kvm           exit 77 (skip) when /dev/kvm is absent, saying so on stderr
#   --needs-no-kvm        exit 77 (skip) when /dev/kvm is present (tests of the no-KVM path)
#   --status LIST         the exit status must be one of LIST (comma-separated)
#   --when-status N       the checks that follow apply only when the status is N
#   --when-status any     ... and from here on, whatever the status
#   --out TEXT            stdout must contain TEXT
#   --no-out TEXT         stdout must not contain TEXT
#   --err TEXT            stderr must contain TEXT
#   --err-lines N         stderr must have exactly N lines
#   --dump FILE           pass --guestinfo-dump to the VMM; the dump must equal FILE
#   --dump-has LINE       (with --dump or --dump-any) the dump must contain LINE as a whole line
#   --dump-any            pass --guestinfo-dump without comparing the whole file
# Exit status: 0 all checks passed, 1 a check failed, 77 skipped.
set -u

name=run
workdir=
status_ok=
dump_expect=
want_dump=0
checks=$(mktemp) || exit 1
trap 'rm -f "$checks"' EXIT
when=any

while [ $# -gt 0 ]; do
	case "$1" in
	--name) name=$2; shift 2 ;;
	--workdir) workdir=$2; shift 2 ;;
	--needs-kvm)
		if [ ! -e /dev/kvm ]; then
			echo "SKIP: /dev/kvm is absent on this machine; this test runs a guest on real KVM" >&2
			exit 77
		fi
		shift ;;
	--needs-no-kvm)
		if [ -e /dev/kvm ]; then
			echo "SKIP: /dev/kvm is present; this test checks the behaviour without it" >&2
			exit 77
		fi
		shift ;;
	--status) status_ok=$2; shift 2 ;;
	--when-status) when=$2; shift 2 ;;
	--out|--no-out|--err|--err-lines|--dump-has)
		printf '%s\t%s\t%s\n' "$when" "$1" "$2" >>"$checks"; shift 2 ;;
	--dump) dump_expect=$2; want_dump=1; shift 2 ;;
	--dump-any) want_dump=1; shift ;;
	--) shift; break ;;
	*) echo "run_guest.sh: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
if [ $# -lt 1 ]; then
	echo "run_guest.sh: no command after --" >&2
	exit 2
fi

if [ -z "$workdir" ]; then
	workdir=$(mktemp -d) || exit 1
	trap 'rm -f "$checks"; rm -rf "$workdir"' EXIT
fi
mkdir -p "$workdir" || exit 1
out=$workdir/$name.stdout
err=$workdir/$name.stderr
dump=$workdir/$name.dump
rm -f "$out" "$err" "$dump"

if [ "$want_dump" = 1 ]; then
	"$@" --guestinfo-dump "$dump" >"$out" 2>"$err"
else
	"$@" >"$out" 2>"$err"
fi
status=$?

failed=0
fail() {
	echo "FAILED: $*"
	failed=1
}

if [ -n "$status_ok" ]; then
	case ",$status_ok," in
	*",$status,"*) ;;
	*) fail "exit status $status, expected $status_ok" ;;
	esac
fi

tab=$(printf '\t')
while IFS="$tab" read -r cond kind arg; do
	if [ "$cond" != any ] && [ "$cond" != "$status" ]; then
		continue
	fi
	case "$kind" in
	--out) grep -qF -e "$arg" "$out" || fail "stdout lacks: $arg" ;;
	--no-out) grep -qF -e "$arg" "$out" && fail "stdout has: $arg" ;;
	--err) grep -qF -e "$arg" "$err" || fail "stderr lacks: $arg" ;;
	--err-lines)
		n=$(wc -l <"$err" | tr -d ' ')
		[ "$n" = "$arg" ] || fail "stderr has $n lines, expected $arg" ;;
	--dump-has)
		if [ ! -f "$dump" ]; then
			fail "no dump written"
		else
			grep -qxF -e "$arg" "$dump" || fail "dump lacks the line: $arg"
		fi ;;
	esac
done <"$checks"

if [ -n "$dump_expect" ]; then
	if [ ! -f "$dump" ]; then
		fail "no dump written"
	elif ! cmp -s "$dump_expect" "$dump"; then
		fail "dump differs from $dump_expect"
		diff -u "$dump_expect" "$dump"
	fi
fi

if [ "$failed" != 0 ]; then
	echo "--- command: $*"
	echo "--- exit status: $status"
	echo "--- stdout:"
	cat "$out"
	echo "--- stderr:"
	cat "$err"
	if [ -f "$dump" ]; then
		echo "--- dump:"
		cat "$dump"
	fi
	exit 1
fi
echo "ok: exit status $status"
exit 0
