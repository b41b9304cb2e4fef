#!/bin/sh
# ovt tests: run the real open-vm-tools programs under vmwhost (tests/ovt/vmwhost.c), which
# answers their CPUID and backdoor accesses with libvmwkvm, and check what each program
# prints and its exit status.
#
#   run_ovt.sh TEST VMWHOST WORKDIR      TEST: checkvm | rpctool | toolbox_stat | vmtoolsd
#
# Exit status: 0 pass, 1 fail, 77 skipped (the program is not installed: Debian package
# open-vm-tools; or the machine refuses what the fixture needs: ptrace of a child, seccomp
# filters, CPUID faulting).
set -u
test=$1
host=$2
work=$3/$test
scale=${VMWKVM_TEST_TIMEOUT_SCALE:-1}
wd=$((90 * scale))
fails=0

PLUGINS=/usr/lib/x86_64-linux-gnu/open-vm-tools/plugins

need() {
	for p in "$@"; do
		if [ ! -e "$p" ]; then
			echo "SKIP: $p is not installed (Debian package open-vm-tools: apt-get install open-vm-tools)"
			exit 77
		fi
	done
}

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

# run NAME [vmwhost options] -- PROGRAM ARGS: stdout to NAME.out, stderr to NAME.err,
# the report to NAME.rep, the exit status to $rc
run() {
	name=$1
	shift
	"$host" --timeout "$wd" --report "$work/$name.rep" "$@" >"$work/$name.out" 2>"$work/$name.err"
	rc=$?
}

# expect NAME RC STDOUT STDERR: exact comparison (STDOUT/STDERR without the final newline)
expect() {
	if [ "$rc" != "$2" ]; then
		fail "$1: exit status $rc, expected $2 (stderr: $(head -c 300 "$work/$1.err"))"
	fi
	if [ "$(cat "$work/$1.out")" != "$3" ]; then
		fail "$1: stdout '$(head -c 300 "$work/$1.out")', expected '$3'"
	fi
	if [ "$(cat "$work/$1.err")" != "$4" ]; then
		fail "$1: stderr '$(head -c 300 "$work/$1.err")', expected '$4'"
	fi
	echo "ok: $1 (exit $rc)"
}

# has NAME LINE: the report contains exactly this line
has() {
	if ! grep -qxF -- "$2" "$work/$1.rep"; then
		fail "$1: report lacks '$2'; report:"
		sed 's/^/    /' "$work/$1.rep" | head -40
	fi
}

probe=$("$host" --probe)
if [ $? -eq 77 ]; then
	echo "SKIP: the fixture cannot run on this machine: $probe"
	exit 77
fi

rm -rf "$work"
mkdir -p "$work" || exit 1
export TZ=UTC LC_ALL=C LANG=C

case $test in
checkvm)
	need /usr/bin/vmware-checkvm
	# without the fixture this host is a KVM guest: ovt refuses, proving the fixture answers below
	/usr/bin/vmware-checkvm >"$work/bare.out" 2>"$work/bare.err"
	rc=$?
	expect bare 1 "" "Error: vmware-checkvm must be run inside a virtual machine on a VMware hypervisor product."
	run version -- /usr/bin/vmware-checkvm
	expect version 0 "VMware software version 6 (good)" ""
	run product -- /usr/bin/vmware-checkvm -p
	expect product 0 "ESX Server" ""
	;;
rpctool)
	need /usr/bin/vmware-rpctool
	R=/usr/bin/vmware-rpctool
	run unset -- $R "info-get guestinfo.k"
	expect unset 1 "" "No value found"
	run preset --guestinfo k=from-the-host -- $R "info-get guestinfo.k"
	expect preset 0 "from-the-host" ""
	run unknown -- $R "no.such.command arg"
	expect unknown 1 "" "Unknown command"
	run oneword -- $R "no.such.command"
	expect oneword 1 "" "Unknown command"
	run noarg -- $R "info-set guestinfo.k"
	expect noarg 1 "" "Two and exactly two arguments expected"
	# info-set then info-get in one VM: a shell runs both (the only program it may exec)
	run short --allow-exec $R -- /bin/sh -c "$R 'info-set guestinfo.k short value' && $R 'info-get guestinfo.k'"
	expect short 0 "$(printf '\nshort value')" ""
	# a value far over 4 KiB: ovt sends and receives it over the high-bandwidth port
	big=$(awk 'BEGIN { d = "0123456789abcdefghijklmnopqrstuvwxyz"; for (i = 0; i < 60000; i++) printf "%s", substr(d, i % 36 + 1, 1) }')
	if [ ${#big} -ne 60000 ]; then
		fail "could not build the 60000-byte value (${#big})"
	fi
	run big --allow-exec $R -- /bin/sh -c "$R 'info-set guestinfo.big $big' >/dev/null && $R 'info-get guestinfo.big'"
	expect big 0 "$big" ""
	# info-set over the 64 KiB message cap: SENDSIZE is refused, ovt reports the failed send
	huge=$(printf '%s%s' "$big" "$big")
	run huge -- $R "info-set guestinfo.huge $huge"
	expect huge 1 "" "RpcOut: Unable to send the RPCI command"
	;;
toolbox_stat)
	need /usr/bin/vmware-toolbox-cmd
	T=/usr/bin/vmware-toolbox-cmd
	before=$(date +%s)
	run hosttime -- $T stat hosttime
	after=$(date +%s)
	expect hosttime 0 "$(cat "$work/hosttime.out")" ""
	t=$(date -d "$(cat "$work/hosttime.out")" +%s 2>/dev/null || echo 0)
	# the printed host time must be the host clock (whole seconds) during the run
	if [ "$t" -lt $((before - 1)) ] || [ "$t" -gt $((after + 1)) ]; then
		fail "hosttime: '$(cat "$work/hosttime.out")' = $t is not within [$before, $after]"
	fi
	run speed --mhz 2345 -- $T stat speed
	expect speed 0 "2345 MHz" ""
	run nospeed --mhz 0 -- $T stat speed
	expect nospeed 75 "" "Unable to get processor speed."
	;;
vmtoolsd)
	need /usr/bin/vmtoolsd "$PLUGINS/vmsvc/libguestInfo.so" "$PLUGINS/vmsvc/libpowerOps.so" \
		"$PLUGINS/vmsvc/libtimeSync.so"
	# only the plugins of the issue (guestInfo, powerOps, timeSync, vix); a private config,
	# log and HOME; time sync is never enabled (and the clock calls are refused anyway)
	mkdir -p "$work/vmsvc" "$work/common" "$work/home"
	for p in guestInfo powerOps timeSync; do
		ln -s "$PLUGINS/vmsvc/lib$p.so" "$work/vmsvc/"
	done
	[ -e "$PLUGINS/common/libvix.so" ] && ln -s "$PLUGINS/common/libvix.so" "$work/common/"
	cat >"$work/tools.conf" <<EOF
[logging]
log = true
vmsvc.level = debug
vmsvc.handler = file
vmsvc.data = $work/vmsvc.log

[guestinfo]
poll-interval = 1
EOF
	cd "$work" || exit 1
	# OS_Halt: powerOps runs its poweroff script first; the fixture refuses that exec, so
	# Tools report the failure (and never reach /sbin/shutdown)
	HOME=$work/home run vmtoolsd --cmd-timeout $((20000 * scale)) \
		--tools-cmd reset --tools-cmd ping --tools-cmd Capabilities_Register \
		--tools-cmd "Set_Option synctime 0" --tools-cmd "No_Such_Command" \
		--tools-cmd "Time_Synchronize 0" --tools-cmd Vix_1_Get_ToolsProperties \
		--tools-cmd "Set_Option broadcastIP 1" --tools-cmd OS_Halt \
		--term-after-cmds --wait-version --wait-guestinfo 1 --wait-guestinfo 4 \
		--wait-guestinfo 11 -- \
		/usr/bin/vmtoolsd -n vmsvc -c "$work/tools.conf" --plugin-path "$work/vmsvc" \
		--common-path "$work/common"
	expect vmtoolsd 0 "" ""
	has vmtoolsd 'tclo: reset -> OK "ATR toolbox"'
	has vmtoolsd 'tclo: ping -> OK ""'
	has vmtoolsd 'tclo: Capabilities_Register -> OK ""'
	has vmtoolsd 'tclo: Set_Option synctime 0 -> OK ""'
	has vmtoolsd 'tclo: No_Such_Command -> ERROR "Unknown Command"'
	has vmtoolsd 'tclo: Time_Synchronize 0 -> OK ""'
	has vmtoolsd 'tclo: Set_Option broadcastIP 1 -> OK ""'
	has vmtoolsd 'tclo: OS_Halt -> ERROR "Error starting script"'
	has vmtoolsd 'denied exec: /etc/vmware-tools/poweroff-vm-default'
	has vmtoolsd 'statechange: ok=0 state=1'
	has vmtoolsd 'cap: statechange='
	has vmtoolsd 'cap: softpowerop_retry='
	has vmtoolsd 'cap: guest_conf_directory=/etc/vmware-tools'
	has vmtoolsd "guestinfo: 1=$(uname -n)"
	grep -q '^state: version=[1-9][0-9]* type=4 version_set=1 unified_loop=1 app="toolbox" ' "$work/vmtoolsd.rep" ||
		fail "vmtoolsd: state line: $(grep '^state:' "$work/vmtoolsd.rep")"
	grep -q '^guestinfo: 11=<[0-9]* bytes>$' "$work/vmtoolsd.rep" || fail "vmtoolsd: no detailed OS data (type 11)"
	# vix answers with its error code, additional error and the base64 properties
	grep -q '^tclo: Vix_1_Get_ToolsProperties -> OK "0 0 [A-Za-z0-9+/=]*"$' "$work/vmtoolsd.rep" ||
		fail "vmtoolsd: Vix_1_Get_ToolsProperties: $(grep Vix_1 "$work/vmtoolsd.rep" | head -c 200)"
	# broadcastIP makes guestInfo info-set guestinfo.ip; the start-up info-sets are there too
	grep -q '^key: guestinfo.ip=.' "$work/vmtoolsd.rep" || fail "vmtoolsd: guestinfo.ip not set"
	has vmtoolsd "key: guestinfo.vmtools.versionNumber=$(sed -n 's/^state: version=\([0-9]*\) .*/\1/p' "$work/vmtoolsd.rep")"
	grep -q '^key: guestinfo.vmtools.description=open-vm-tools [0-9.]* build [0-9]*$' "$work/vmtoolsd.rep" ||
		fail "vmtoolsd: guestinfo.vmtools.description"
	# every TCLO answer matched one of the 9 commands
	grep -q ' answers=9 dropped=0 timeouts=0 logs=[0-9]* running=0$' "$work/vmtoolsd.rep" ||
		fail "vmtoolsd: answer counters / not running after exit"
	has vmtoolsd 'running before SIGTERM: 1'
	# stopped cleanly: vmtoolsd closed its channels on SIGTERM and exited 0 (checked above)
	grep -q 'guestinfo: 4=build-[0-9][0-9]*$' "$work/vmtoolsd.rep" || fail "vmtoolsd: no build number (type 4)"
	;;
*)
	echo "unknown test $test"
	exit 1
	;;
esac

if [ "$fails" -ne 0 ]; then
	echo "$test: $fails failure(s); files in $work"
	exit 1
fi
echo "$test: all passed"
exit 0
