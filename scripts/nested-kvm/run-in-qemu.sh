#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run-in-qemu.sh: run a command against a REAL /dev/kvm on a machine that has none,
# by booting a Debian kernel inside QEMU with TCG (software emulation) and an
# emulated AMD SVM CPU, loading kvm + kvm_amd there, and running the command in
# that guest. Used by scripts/test.sh and scripts/demo.sh (and so by CI) where /dev/kvm is absent.
#
# Usage: scripts/nested-kvm/run-in-qemu.sh [options] [-- command [args...]]
#   default command: ctest --test-dir <build> -L kvm --output-on-failure
# Exit status: the command's exit status inside the guest; 124 if the timeout hit,
# 125 if the guest never reported a status (boot failure, panic), 2 for usage errors.
# See scripts/nested-kvm/README.md.
set -euo pipefail

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/../.." && pwd)

BUILD_DIR=""
CACHE_DIR=${VMWKVM_NESTED_CACHE:-/var/tmp/vmwkvm-nested-kvm}
KERNEL_SUITE=stable           # stable (bookworm, 6.1) | backports (bookworm-backports, 6.12)
KERNEL_FLAVOR=cloud           # cloud | amd64
VMLINUZ=""                    # explicit kernel image (with --modules-dir)
MODULES_DIR=""
CPU_MODEL=${VMWKVM_NESTED_CPU:-}   # empty: max (6.1), max,-cx16 (6.12, see README)
SMP=1
MEM_MB=2048
TIMEOUT_S=1800
BOOT_TIMEOUT_S=180            # kvm must be loaded by then, or the boot is retried
BOOT_RETRIES=2
KVM_PARAMS=()                 # e.g. kvm.enable_vmware_backdoor=1 kvm_amd.nested=0
CARRY=()
ENVS=()
SELFTEST=0
SELFTEST_ONLY=0
INSTALL_DEPS=0
OFFLINE=0
REFRESH=0
KEEP=0
VERBOSE=0
GUEST_CWD=""
EXTRA_APPEND=""
REFKVM=0                      # 1: load the reference KVM (refkvm/) instead of the packaged one
REFKVM_DIR=""                 # its modules (kvm.ko, kvm-amd.ko); default: refkvm/build.sh builds them
CMD=()

usage() {
	cat <<'EOF'
Usage: run-in-qemu.sh [options] [-- command [args...]]

Boots a Debian kernel in QEMU/TCG with an emulated AMD SVM CPU, loads kvm and
kvm_amd, and runs the command (default: ctest -L kvm on the build dir) there.

Options:
  -B, --build DIR        build tree to carry into the guest at the same path
                         (default: $REPO/build-nested if it exists)
  --carry PATH           also carry PATH (file or directory, same absolute path);
                         ELF files bring their shared libraries. Repeatable.
  --env NAME=VALUE       set an environment variable for the command. Repeatable.
  --cwd DIR              working directory in the guest (default: build dir or /)
  --kvm-param M.P=V      module parameter, e.g. kvm.enable_vmware_backdoor=1,
                         kvm_amd.nrips=0. Repeatable.
  --selftest             run the bundled kvm-smoke check before the command
  --selftest-only        run only kvm-smoke (no command, no build dir needed)
  --cpu MODEL            QEMU CPU model (default: max, or max,-cx16 for the
                         backports kernel; EPYC,+svm and qemu64,+svm,+npt also work)
  --append ARGS          extra guest kernel command line arguments
  --smp N                guest vCPUs (default 1; the host has few cores)
  -m, --mem MB           guest RAM in MiB (default 2048)
  -t, --timeout SEC      kill QEMU after SEC seconds (default 1800)
  --boot-timeout SEC     retry the boot if kvm is not loaded by then (default 180)
  --boot-retries N       boot attempts after a failed boot (default 2)
  --kernel-suite S       stable (Debian 12 kernel, 6.1, default, reliable) or
                         backports (Debian 12 backports kernel, 6.12: newer KVM
                         uAPI, but ~1 boot in 3 crashes under QEMU 7.2 TCG)
  --kernel-flavor F      cloud (default) or amd64
  --refkvm               load the reference KVM (refkvm/: the backports kernel's
                         kvm.ko + kvm-amd.ko with the proposed VMware uAPIs) instead
                         of the packaged modules; builds them with refkvm/build.sh
                         (cached). Implies --kernel-suite backports.
  --refkvm-dir DIR       like --refkvm, with modules already built in DIR
  --kernel FILE --modules-dir DIR
                         use this kernel image and its lib/modules/<ver> dir
  --cache DIR            download/extract cache (default /var/tmp/vmwkvm-nested-kvm,
                         or $VMWKVM_NESTED_CACHE)
  --offline              never call apt-get; use what the cache holds
  --refresh              look for a newer kernel package (default: reuse the
                         one cached for this suite and flavor)
  --install-deps         apt-get install the host tools this script needs
  --keep                 keep the generated initramfs work dir
  -v, --verbose          show the full guest kernel log
  -h, --help             this text
EOF
}

die() { echo "run-in-qemu: $*" >&2; exit 2; }
log() { echo "run-in-qemu: $*" >&2; }

while [ $# -gt 0 ]; do
	case "$1" in
	-B|--build) BUILD_DIR=$2; shift 2 ;;
	--carry) CARRY+=("$2"); shift 2 ;;
	--env) ENVS+=("$2"); shift 2 ;;
	--cwd) GUEST_CWD=$2; shift 2 ;;
	--kvm-param) KVM_PARAMS+=("$2"); shift 2 ;;
	--selftest) SELFTEST=1; shift ;;
	--selftest-only) SELFTEST=1; SELFTEST_ONLY=1; shift ;;
	--cpu) CPU_MODEL=$2; shift 2 ;;
	--append) EXTRA_APPEND="$EXTRA_APPEND $2"; shift 2 ;;
	--smp) SMP=$2; shift 2 ;;
	-m|--mem) MEM_MB=$2; shift 2 ;;
	-t|--timeout) TIMEOUT_S=$2; shift 2 ;;
	--boot-timeout) BOOT_TIMEOUT_S=$2; shift 2 ;;
	--boot-retries) BOOT_RETRIES=$2; shift 2 ;;
	--kernel-suite) KERNEL_SUITE=$2; shift 2 ;;
	--kernel-flavor) KERNEL_FLAVOR=$2; shift 2 ;;
	--refkvm) REFKVM=1; shift ;;
	--refkvm-dir) REFKVM=1; REFKVM_DIR=$2; shift 2 ;;
	--kernel) VMLINUZ=$2; shift 2 ;;
	--modules-dir) MODULES_DIR=$2; shift 2 ;;
	--cache) CACHE_DIR=$2; shift 2 ;;
	--offline) OFFLINE=1; shift ;;
	--refresh) REFRESH=1; shift ;;
	--install-deps) INSTALL_DEPS=1; shift ;;
	--keep) KEEP=1; shift ;;
	-v|--verbose) VERBOSE=1; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; CMD=("$@"); break ;;
	*) usage >&2; die "unknown option: $1" ;;
	esac
done

# ---------------------------------------------------------------- host tools
need_tools() {
	local missing=() t
	for t in qemu-system-x86_64 cpio xz gzip ldd file dpkg apt-get; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || missing+=(busybox-static)
	[ ${#missing[@]} -eq 0 ] || { echo "${missing[*]}"; return 1; }
}
if [ "$INSTALL_DEPS" = 1 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		qemu-system-x86 busybox-static cpio xz-utils file gcc libc6-dev >/dev/null
fi
if ! miss=$(need_tools); then
	die "missing host tools: $miss (run with --install-deps, or: apt-get install -y qemu-system-x86 busybox-static cpio xz-utils file)"
fi

# ---------------------------------------------------------------- kernel
mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
if [ -z "$CPU_MODEL" ]; then
	# QEMU 7.2's TCG corrupts the 6.12 kernel's SLUB fast path (CMPXCHG16B on the per-CPU
	# freelist: oopses in kmem_cache_alloc_noprof with garbage EFLAGS in ~2 of 3 boots);
	# without CX16 the kernel takes its fallback and booted cleanly every time
	CPU_MODEL=max
	if [ "$KERNEL_SUITE" = backports ] || [ "$REFKVM" = 1 ]; then CPU_MODEL=max,-cx16; fi
fi
if [ "$REFKVM" = 1 ]; then
	[ -z "$VMLINUZ" ] || die "--refkvm boots the backports kernel; not with --kernel"
	[ "$KERNEL_FLAVOR" = cloud ] || die "--refkvm is built for the cloud flavor"
	KERNEL_SUITE=backports
fi

# Prints the path of an extracted kernel tree (contains boot/ and lib/modules/).
fetch_kernel() {
	local aptdir="$CACHE_DIR/apt-$KERNEL_SUITE" meta pkg deb dest
	local -a O=()
	meta="linux-image-$KERNEL_FLAVOR-amd64"
	[ "$KERNEL_FLAVOR" = amd64 ] && meta=linux-image-amd64
	case "$KERNEL_SUITE" in
	backports)
		# A private apt configuration: the system's sources stay untouched.
		mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
			>"$aptdir/sources.list"
		O=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
		   -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir" -o APT::Sandbox::User=root)
		;;
	stable) O=(-o APT::Sandbox::User=root) ;;
	*) die "unknown --kernel-suite $KERNEL_SUITE" ;;
	esac
	local pin="$CACHE_DIR/current-$KERNEL_SUITE-$KERNEL_FLAVOR"
	if [ "$REFRESH" = 0 ] && [ -f "$pin" ] && [ -f "$(cat "$pin")/.done" ]; then
		cat "$pin"
		return 0
	fi
	if [ "$OFFLINE" = 0 ]; then
		if [ "$KERNEL_SUITE" = backports ] || [ -z "$(apt-cache policy "$meta" 2>/dev/null | grep Candidate)" ]; then
			apt-get "${O[@]}" update -qq >&2 || log "apt-get update failed; trying the cache"
		fi
		pkg=$(apt-cache "${O[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
		if [ -n "$pkg" ]; then
			dest="$CACHE_DIR/$pkg"
			if [ ! -f "$dest/.done" ]; then
				log "downloading $pkg"
				rm -rf "$dest" && mkdir -p "$dest/deb"
				(cd "$dest/deb" && apt-get "${O[@]}" download "$pkg" >&2)
				deb=$(ls "$dest"/deb/*.deb)
				dpkg -x "$deb" "$dest"
				rm -f "$deb"
				touch "$dest/.done"
			fi
			echo "$dest" >"$pin"
			echo "$dest"
			return 0
		fi
		log "could not resolve $meta; trying the cache"
	fi
	dest=$(ls -d "$CACHE_DIR"/linux-image-*-"$KERNEL_FLAVOR"-amd64 "$CACHE_DIR"/linux-image-*-amd64 2>/dev/null |
		while read -r d; do [ -f "$d/.done" ] && echo "$d"; done | sort -V | tail -1)
	[ -n "$dest" ] || die "no kernel in $CACHE_DIR and none could be downloaded"
	echo "$dest"
}

if [ -n "$VMLINUZ" ]; then
	[ -n "$MODULES_DIR" ] || die "--kernel needs --modules-dir"
else
	KTREE=$(fetch_kernel)
	VMLINUZ=$(ls "$KTREE"/boot/vmlinuz-* | head -1)
	MODULES_DIR=$(ls -d "$KTREE"/lib/modules/* | head -1)
fi
[ -f "$VMLINUZ" ] || die "no kernel image $VMLINUZ"
[ -d "$MODULES_DIR" ] || die "no modules dir $MODULES_DIR"
KVER=$(basename "$MODULES_DIR")
if [ "$REFKVM" = 1 ]; then
	if [ -z "$REFKVM_DIR" ]; then
		bargs=(--cache "$CACHE_DIR")
		[ "$OFFLINE" = 1 ] && bargs+=(--offline)
		REFKVM_DIR=$("$REPO_DIR/refkvm/build.sh" "${bargs[@]}" | tail -1) || die "refkvm/build.sh failed"
	fi
	for m in kvm kvm-amd; do
		[ -f "$REFKVM_DIR/$m.ko" ] || die "no $m.ko in $REFKVM_DIR"
		vm=$(objcopy -O binary --only-section=.modinfo "$REFKVM_DIR/$m.ko" /dev/stdout | tr '\0' '\n' |
			sed -n 's/^vermagic=\([^ ]*\).*/\1/p')
		[ "$vm" = "$KVER" ] || die "$REFKVM_DIR/$m.ko is built for '$vm', the kernel is $KVER"
	done
	log "reference KVM from $REFKVM_DIR"
fi

# ---------------------------------------------------------------- build dir
if [ -z "$BUILD_DIR" ] && [ "$SELFTEST_ONLY" = 0 ] && [ -d "$REPO_DIR/build-nested" ]; then
	BUILD_DIR="$REPO_DIR/build-nested"
fi
if [ -n "$BUILD_DIR" ]; then
	[ -d "$BUILD_DIR" ] || die "no build dir $BUILD_DIR"
	BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
fi
if [ ${#CMD[@]} -eq 0 ] && [ "$SELFTEST_ONLY" = 0 ]; then
	[ -n "$BUILD_DIR" ] || die "no command and no build dir (use -B DIR, -- CMD, or --selftest-only)"
	CMD=(ctest --test-dir "$BUILD_DIR" -L kvm --output-on-failure)
fi
[ -n "$GUEST_CWD" ] || GUEST_CWD=${BUILD_DIR:-/}

# ---------------------------------------------------------------- initramfs
WORK=$(mktemp -d "$CACHE_DIR/work.XXXXXX")
ROOT="$WORK/root"
cleanup() { [ "$KEEP" = 1 ] && log "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,run,root,etc,mod,usr/bin,usr/lib}

cp /bin/busybox "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"    # the rest: busybox --install in the guest
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"

# Copies one path (file, symlink or directory) to the same absolute path in the guest.
carry_one() {
	local p=$1
	[ -e "$p" ] || { log "warning: cannot carry $p (missing)"; return 0; }
	p=$(readlink -f "$p")
	[ -e "$ROOT$p" ] && return 0
	mkdir -p "$ROOT$(dirname "$p")"
	cp -a "$p" "$ROOT$p"
}
# Carries a path plus the shared libraries of every dynamic ELF file under it.
declare -A LIBS_SEEN=()
carry_libs_of() {
	local lib f
	local -a elfs=()
	# forks are slow on some hosts: no per-file test, one ldd call for all
	# (scripts and static programs just make ldd say so)
	while IFS= read -r -d '' f; do elfs+=("$f"); done \
		< <(find "$1" \( -type f -perm -u+x -o -type f -name '*.so*' \) -print0 2>/dev/null)
	[ ${#elfs[@]} -gt 0 ] || return 0
	while IFS= read -r lib; do
		[ -n "$lib" ] && [ -z "${LIBS_SEEN[$lib]:-}" ] || continue
		LIBS_SEEN[$lib]=1
		# the path the loader asks for, with the content it resolves to
		mkdir -p "$ROOT$(dirname "$lib")"
		cp -L "$lib" "$ROOT$lib"
	done < <(ldd "${elfs[@]}" 2>/dev/null | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u)
}
carry() { carry_one "$1"; carry_libs_of "$(readlink -f "$1")"; }

# the build dir: everything but object files and CMake's internals
if [ -n "$BUILD_DIR" ]; then
	(cd / && find "${BUILD_DIR#/}" \( -path '*/CMakeFiles' -prune \) -o \
		\( -type f -o -type l \) ! -name '*.o' ! -name '*.a' -print |
		cpio -pdm --quiet "$ROOT")
	carry_libs_of "$ROOT$BUILD_DIR" 2>/dev/null || true
	# ldd above ran on the copies; libraries of the build itself resolve inside it
	SRC_DIR=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)
	[ -n "$SRC_DIR" ] && [ -d "$SRC_DIR/tests" ] && carry_one "$SRC_DIR/tests"
fi
for p in "${CARRY[@]}"; do carry "$p"; done
# the command itself, when it is a program from PATH
if [ ${#CMD[@]} -gt 0 ]; then
	if c=$(command -v "${CMD[0]}" 2>/dev/null) && [ -f "$c" ]; then
		carry "$c"
	fi
	if [ "$(basename "${CMD[0]}")" = ctest ] || [ "$(basename "${CMD[0]}")" = cmake ]; then
		for d in /usr/share/cmake-3.*; do [ -d "$d" ] && carry_one "$d"; done
	fi
fi
# the linker for any dynamic program
[ -e /lib64/ld-linux-x86-64.so.2 ] && { mkdir -p "$ROOT/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"; }

# self-test program
if [ "$SELFTEST" = 1 ]; then
	command -v cc >/dev/null || die "--selftest needs a C compiler (apt-get install gcc libc6-dev)"
	cc -O2 -static -o "$ROOT/bin/kvm-smoke" "$SELF_DIR/kvm-smoke.c"
fi

# kernel modules: kvm_amd and everything it depends on, in load order
mod_path() { # module name -> file
	find "$MODULES_DIR/kernel" -name "$1.ko*" -o -name "$(echo "$1" | tr _ -).ko*" | head -1
}
mod_deps() { # file -> comma list of deps
	case "$1" in
	*.xz) xz -dc "$1" ;; *.zst) zstd -dc "$1" ;; *.gz) gzip -dc "$1" ;; *) cat "$1" ;;
	esac | strings | sed -n 's/^depends=//p' | head -1
}
MOD_ORDER=()
declare -A MOD_DONE=()
add_mod() {
	local name=$1 f d
	[ -z "${MOD_DONE[$name]:-}" ] || return 0
	MOD_DONE[$name]=1
	f=$(mod_path "$name")
	if [ "$REFKVM" = 1 ] && { [ "$name" = kvm ] || [ "$name" = kvm_amd ]; }; then
		f="$REFKVM_DIR/$(echo "$name" | tr _ -).ko"
	fi
	[ -n "$f" ] || die "module $name not found under $MODULES_DIR"
	for d in $(mod_deps "$f" | tr , ' '); do add_mod "$d"; done
	case "$f" in
	*.xz) xz -dc "$f" >"$ROOT/mod/$name.ko" ;; *.zst) zstd -dc "$f" >"$ROOT/mod/$name.ko" ;;
	*.gz) gzip -dc "$f" >"$ROOT/mod/$name.ko" ;; *) cp "$f" "$ROOT/mod/$name.ko" ;;
	esac
	MOD_ORDER+=("$name")
}
add_mod kvm_amd
[ "$REFKVM" = 1 ] && basename "$REFKVM_DIR" >"$ROOT/refkvm"

# per-module parameters
modparams() {
	local m=$1 p out=""
	for p in "${KVM_PARAMS[@]}"; do
		case "$p" in "$m".*) out="$out ${p#"$m".}" ;; esac
	done
	echo "$out"
}

# command and environment, quoted for the guest's sh
{
	echo "export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TMPDIR=/tmp"
	for e in "${ENVS[@]}"; do printf 'export %q\n' "$e"; done
	printf 'cd %q\n' "$GUEST_CWD"
	if [ ${#CMD[@]} -gt 0 ]; then printf '%q ' "${CMD[@]}"; echo; else echo "true"; fi
} >"$ROOT/cmd.sh"

{
	cat <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
# the initramfs root is writable already; a tmpfs over /tmp or /run would hide a build
# tree carried there (a CI clone under /tmp, say), so mount one only over an empty dir
for d in /tmp /run; do
	mkdir -p "$d"
	[ -n "$(ls -A "$d" 2>/dev/null)" ] || mount -t tmpfs tmpfs "$d"
done
chmod 1777 /tmp
ln -sf /proc/self/fd /dev/fd 2>/dev/null
echo "[nested-kvm] guest up after $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)"
EOF
	for m in "${MOD_ORDER[@]}"; do
		echo "insmod /mod/$m.ko$(modparams "$m") || echo '[nested-kvm] insmod $m failed'"
	done
	cat <<'EOF'
if [ ! -c /dev/kvm ]; then
	echo "[nested-kvm] /dev/kvm did not appear"; dmesg | grep -i -E 'kvm|svm' | tail -20
	echo "@@NESTED-KVM-RC=125@@"; poweroff -f
fi
[ -e /refkvm ] && echo "[nested-kvm] reference KVM (refkvm) loaded: $(cat /refkvm)"
for p in /sys/module/kvm/parameters/enable_vmware_backdoor /sys/module/kvm_amd/parameters/nested \
         /sys/module/kvm_amd/parameters/npt /sys/module/kvm_amd/parameters/nrips; do
	[ -r $p ] && printf '%s=%s ' "${p#/sys/module/}" "$(cat $p)"
done
echo
echo "[nested-kvm] /dev/kvm ready after $(cut -d' ' -f1 /proc/uptime) s"
DMESG_LINES=$(dmesg | wc -l)
rc=0
if [ -x /bin/kvm-smoke ]; then
	/bin/kvm-smoke || rc=$?
fi
EOF
	if [ "$SELFTEST_ONLY" = 0 ]; then
		cat <<'EOF'
echo "[nested-kvm] running: $(tail -1 /cmd.sh)"
sh /cmd.sh </dev/null
crc=$?
[ $crc -ne 0 ] && rc=$crc
EOF
	fi
	cat <<'EOF'
NEW=$(dmesg | tail -n +$((DMESG_LINES + 1)))
if [ -n "$NEW" ]; then echo "[nested-kvm] guest kernel messages during the run:"; echo "$NEW"; fi
echo "[nested-kvm] finished after $(cut -d' ' -f1 /proc/uptime) s"
echo "@@NESTED-KVM-RC=$rc@@"
sync
poweroff -f
EOF
} >"$ROOT/init"
chmod +x "$ROOT/init"

INITRD="$WORK/initramfs.cpio"
(cd "$ROOT" && find . | cpio -o -H newc --quiet) >"$INITRD"
log "initramfs $(du -h "$INITRD" | cut -f1), kernel $KVER, cpu $CPU_MODEL, $SMP vCPU, ${MEM_MB} MiB"

# ---------------------------------------------------------------- boot
# no_timer_check: on a loaded host TCG can be too slow for the kernel's IO-APIC timer check,
# which then panics ("IO-APIC + timer doesn't work!"; seen in 2 of ~37 6.12 boots)
APPEND="console=ttyS0 panic=-1 rdinit=/init no_timer_check"
[ "$VERBOSE" = 1 ] || APPEND="$APPEND quiet loglevel=3"
APPEND="$APPEND$EXTRA_APPEND"
LOG="$WORK/console.log"
PIDFILE="$WORK/qemu.pid"

# One boot. Returns 0 when the guest reported a status (in $rc), 1 when the boot
# itself failed before /dev/kvm was ready (worth retrying), 2 otherwise.
boot_once() {
	local t0 t1 qrc ready=0 start now
	rm -f "$LOG" "$PIDFILE"
	: >"$LOG"
	t0=$(date +%s.%N)
	(
		nice -n 10 timeout -k 10 "$TIMEOUT_S" qemu-system-x86_64 \
			-accel tcg -cpu "$CPU_MODEL" -smp "$SMP" -m "$MEM_MB" \
			-nodefaults -no-user-config -display none -serial stdio -no-reboot \
			-pidfile "$PIDFILE" \
			-kernel "$VMLINUZ" -initrd "$INITRD" -append "$APPEND" \
			</dev/null 2> >(grep -v "TCG doesn't support requested feature" >&2)
		echo $? >"$WORK/qemu.rc"
	) | sed -u 's/\r//g' | tee "$LOG" &
	# (sed -u: unbuffered; a block-buffering filter here held the "/dev/kvm ready" line back
	# until 4 KiB of output had followed it, so a quiet test run tripped the boot watchdog)
	local pipe=$!
	start=$(date +%s)
	# boot watchdog: a guest that has not loaded kvm within BOOT_TIMEOUT_S is stuck
	while kill -0 "$pipe" 2>/dev/null; do
		if [ "$ready" = 0 ] && grep -q '^\[nested-kvm\] /dev/kvm ready' "$LOG"; then
			ready=1
		fi
		now=$(date +%s)
		if [ "$ready" = 0 ] && [ $((now - start)) -gt "$BOOT_TIMEOUT_S" ]; then
			log "guest not ready after $BOOT_TIMEOUT_S s; killing QEMU"
			[ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
			break
		fi
		sleep 1
	done
	wait "$pipe" 2>/dev/null || true
	t1=$(date +%s.%N)
	qrc=$(cat "$WORK/qemu.rc" 2>/dev/null || echo 125)
	log "QEMU wall time $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
	grep -q '^\[nested-kvm\] /dev/kvm ready' "$LOG" && ready=1
	rc=$(sed -n 's/^@@NESTED-KVM-RC=\([0-9]*\)@@$/\1/p' "$LOG" | tail -1)
	[ -n "$rc" ] && return 0
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		log "timed out after $TIMEOUT_S s"
		rc=124
		return 2
	fi
	rc=125
	[ "$ready" = 0 ] && { log "guest kernel failed before /dev/kvm was ready (QEMU exit $qrc)"; return 1; }
	log "guest reported no status (QEMU exit $qrc)"
	return 2
}

rc=125
for attempt in $(seq 1 $((BOOT_RETRIES + 1))); do
	[ "$attempt" -gt 1 ] && log "boot attempt $attempt"
	set +e
	boot_once
	b=$?
	set -e
	[ "$b" = 1 ] || break
done
exit "$rc"
