#!/usr/bin/env bash
# CI stage for documentation, distribution packages and the ABI (issue 7). Run by .ci/run;
# also runnable by hand from any checkout (it uses the working tree, minus ignored files).
#
#   scripts/ci-docs-packaging.sh [--install-deps]
#
#  1. docs      Doxygen reference with warnings as errors (-DVMWKVM_BUILD_DOCS=ON also makes
#               every docs/examples program mandatory), and the manual pages' groff check
#  2. abi       scripts/abi-check.sh on that RelWithDebInfo build: abidiff against the
#               committed baseline, and exports == version map == Debian symbols file
#  3. packages  dpkg-buildpackage -us -uc -b on a copy of the tree (tests run inside),
#               lintian with no error and no warning
#  4. install   the three packages unpacked with dpkg -x into a clean root: content lists
#               checked, the C and C++ consumers built against the unpacked -dev package
#               (pkg-config with a sysroot and find_package) and run, the tools started
#
# Output goes to build-ci-docs/ and build-ci-pkg/ (both ignored by git).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEPS=(doxygen groff-base abigail-tools binutils debhelper dpkg-dev devscripts fakeroot lintian
      cmake pkg-config check gcc g++ make)
if [[ "${1:-}" == "--install-deps" ]]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null
	apt-get install -y -q --no-install-recommends "${DEPS[@]}" </dev/null
fi

fail=0
step() { echo; echo "---- $*"; }
bad() { echo "FAIL: $*" >&2; fail=1; }

# ------------------------------------------------------------------ 1. docs
DOCS_BUILD=$ROOT/build-ci-docs
step "docs: configure and build with -DVMWKVM_BUILD_DOCS=ON (Doxygen warnings are errors)"
mkdir -p "$DOCS_BUILD"
if cmake -S "$ROOT" -B "$DOCS_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVMWKVM_WERROR=ON \
	-DVMWKVM_BUILD_DOCS=ON -DVMWKVM_BUILD_TESTS=OFF -DVMWKVM_BUILD_BENCH=OFF \
	>"$DOCS_BUILD/ci-configure.log" 2>&1; then
	if cmake --build "$DOCS_BUILD" -j 2 >"$DOCS_BUILD/ci-build.log" 2>&1; then
		echo "docs: HTML reference in $DOCS_BUILD/docs/html ($(find "$DOCS_BUILD/docs/html" -name '*.html' | wc -l) pages); docs/examples compiled"
	else
		grep -E "error|warning" "$DOCS_BUILD/ci-build.log" | head -100 >&2 || true
		bad "docs build (Doxygen warnings or an example that does not compile); log: $DOCS_BUILD/ci-build.log"
	fi
else
	cat "$DOCS_BUILD/ci-configure.log" >&2
	bad "docs configure"
fi
step "docs: API documentation contract (thread-safety and errors of every exported function)"
cmake -DINCDIR="$ROOT/include" -P "$ROOT/docs/CheckApiDocs.cmake" || bad "API documentation contract"
step "docs: manual pages format without groff warnings"
cmake -DGROFF="$(command -v groff)" -DMANDIR="$ROOT/docs/man" -P "$ROOT/docs/CheckManPages.cmake" || bad "manual pages"

# ------------------------------------------------------------------ 2. abi
step "abi: abidiff against abi/<SONAME>.abi; exports, version map and symbols file agree"
if [[ -e "$DOCS_BUILD/lib/libvmwkvm.so" ]]; then
	"$ROOT/scripts/abi-check.sh" "$DOCS_BUILD" || bad "ABI check (if the change is intended and compatible: scripts/update-abi.sh)"
else
	bad "ABI check: no library was built"
fi

# ------------------------------------------------------------------ 3. packages
PKG=$ROOT/build-ci-pkg
step "packages: dpkg-buildpackage -us -uc -b on a copy of the tree"
rm -rf "$PKG"
mkdir -p "$PKG/src"
# tracked and untracked-but-not-ignored files: what a commit of this tree would contain
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
	tar -C "$ROOT" --no-recursion --ignore-failed-read --null -cf - -T - | tar -xf - -C "$PKG/src"
built=0
if (cd "$PKG/src" && dpkg-buildpackage -us -uc -b) >"$PKG/dpkg-buildpackage.log" 2>&1; then
	built=1
	grep -E "tests passed|tests failed" "$PKG/dpkg-buildpackage.log" || true
	changes=$(ls "$PKG"/libvmwkvm_*_amd64.changes)
	step "lintian (no error, no warning; overrides are documented in debian/*.lintian-overrides)"
	lrc=0
	lintian --fail-on error,warning --display-info "$changes" >"$PKG/lintian.log" 2>&1 || lrc=$?
	grep -v '^running with root privileges' "$PKG/lintian.log" || true
	if [[ $lrc -ne 0 ]]; then
		bad "lintian (exit $lrc)"
	else
		echo "lintian: no error, no warning"
	fi
else
	tail -60 "$PKG/dpkg-buildpackage.log" >&2
	bad "dpkg-buildpackage; log: $PKG/dpkg-buildpackage.log"
fi

# ------------------------------------------------------------------ 4. install into a clean root
if [[ $built -eq 1 ]]; then
	step "install: dpkg -x into a clean root, content lists"
	ma=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
	R=$PKG/root
	rm -rf "$R"
	mkdir -p "$R"
	for p in libvmwkvm0 libvmwkvm-dev vmwkvm-tools; do
		deb=$(ls "$PKG"/${p}_*_amd64.deb)
		dpkg -x "$deb" "$R"
		dpkg -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' >"$PKG/$p.contents"
	done
	# every file belongs to exactly one package
	dups=$(cat "$PKG"/*.contents | sort | uniq -d)
	[[ -z "$dups" ]] || bad "files in more than one package: $dups"
	expect() { # PACKAGE PATH-REGEX
		grep -Eq "$2" "$PKG/$1.contents" || bad "$1 lacks $2"
	}
	expect libvmwkvm0 "^/usr/lib/$ma/libvmwkvm\.so\.0$"
	expect libvmwkvm0 "^/usr/lib/$ma/libvmwkvm\.so\.0\.[0-9]+\.[0-9]+$"
	expect libvmwkvm-dev "^/usr/lib/$ma/libvmwkvm\.so$"
	expect libvmwkvm-dev "^/usr/include/vmwkvm/vmwkvm\.h$"
	expect libvmwkvm-dev "^/usr/include/vmwkvm/version\.h$"
	expect libvmwkvm-dev "^/usr/lib/$ma/pkgconfig/vmwkvm\.pc$"
	expect libvmwkvm-dev "^/usr/lib/$ma/cmake/vmwkvm/vmwkvmConfig\.cmake$"
	expect libvmwkvm-dev "^/usr/share/man/man3/vmwkvm_exit_decode\.3\.gz$"
	expect libvmwkvm-dev "^/usr/share/man/man7/vmwkvm\.7\.gz$"
	expect vmwkvm-tools "^/usr/bin/vmwkvm-probe$"
	expect vmwkvm-tools "^/usr/share/man/man1/vmwkvm-probe\.1\.gz$"
	if [[ -d "$ROOT/examples/minivmm" ]]; then
		expect vmwkvm-tools "^/usr/bin/vmwkvm-minivmm$"
		expect vmwkvm-tools "^/usr/share/man/man1/vmwkvm-minivmm\.1\.gz$"
	fi
	if grep -Eq "^/usr/lib/$ma/libvmwkvm" "$PKG/vmwkvm-tools.contents"; then
		bad "vmwkvm-tools ships the library"
	fi
	# every program has its manual page
	# shellcheck disable=SC2094 # the contents file is only read
	while read -r f; do
		case $f in /usr/bin/*)
			n=${f#/usr/bin/}
			grep -q "^/usr/share/man/man1/$n\.1\.gz$" "$PKG/vmwkvm-tools.contents" || bad "no manual page for $f"
			;;
		esac
	done <"$PKG/vmwkvm-tools.contents"
	# and every manual page of section 1 has its program
	# shellcheck disable=SC2094 # the contents file is only read
	while read -r f; do
		case $f in /usr/share/man/man1/*.1.gz)
			n=${f#/usr/share/man/man1/}
			n=${n%.1.gz}
			grep -q "^/usr/bin/$n\$" "$PKG/vmwkvm-tools.contents" || bad "manual page $f without /usr/bin/$n"
			;;
		esac
	done <"$PKG/vmwkvm-tools.contents"
	for demo in vmwkvm-snapshot-demo vmwkvm-restore-demo; do
		if [[ -d "$ROOT/examples/${demo#vmwkvm-}" ]]; then
			expect vmwkvm-tools "^/usr/bin/$demo\$"
			expect vmwkvm-tools "^/usr/share/man/man1/$demo\.1\.gz\$"
		fi
	done
	for p in libvmwkvm0 libvmwkvm-dev vmwkvm-tools; do
		echo "$p: $(wc -l <"$PKG/$p.contents") files"
	done

	step "install: C and C++ consumers against the unpacked libvmwkvm-dev"
	mkdir -p "$PKG/consumers"
	SYSROOT=$R AUTOPKGTEST_TMP=$PKG/consumers sh "$ROOT/debian/tests/build-consumers" || bad "consumer programs"

	step "install: the unpacked tools start (--help) with the unpacked library"
	for t in "$R"/usr/bin/vmwkvm-probe "$R"/usr/bin/vmwkvm-minivmm; do
		[[ -e "$t" ]] || continue
		if LD_LIBRARY_PATH="$R/usr/lib/$ma" "$t" --help >/dev/null 2>&1; then
			echo "$(basename "$t") --help: ok"
		else
			bad "$(basename "$t") --help failed with the unpacked library"
		fi
	done
fi

echo
if [[ $fail -ne 0 ]]; then
	echo "docs/packaging/ABI: FAILED"
	exit 1
fi
echo "docs/packaging/ABI: all checks passed"
