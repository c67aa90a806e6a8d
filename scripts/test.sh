#!/usr/bin/env bash
# scripts/test.sh: run markgate's whole test suite, real peers included.
#
#   scripts/test.sh                 install missing peers, then cargo test --all-targets (+ doc tests)
#   scripts/test.sh --install-only  only install the peers (used by .ci/run before fmt/clippy)
#   scripts/test.sh -- ARGS...      pass ARGS to cargo test (e.g. -- --test postfix)
#
# The end-to-end tests start private Postfix instances on loopback (their own config, queue and
# ports under /tmp; the system's /etc/postfix is never read), relay to Postfix's smtp-sink, send
# with swaks and play the MTA with OpenDKIM's miltertest. The thread-ledger tests start their
# own redis-server on a free loopback port (no persistence); a system Redis is never used.
# Postfix's master must start as root, so this script needs root (it re-runs itself with sudo
# when it can). Missing peers are installed with apt-get; the postfix package is preseeded to
# "No configuration" so installing it does not set up or start a system mail server. Sendmail's
# packages are downloaded (not installed: they conflict with postfix) into target/sendmail-debs
# for tests/sendmail.rs. Inside this script a missing peer fails the run instead
# of skipping the test (MARKGATE_REQUIRE_REAL_PEERS=1).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null; then
		echo "scripts/test.sh: Postfix needs root; re-running with sudo" >&2
		exec sudo -E env "PATH=$PATH" "$self" "$@"
	fi
	echo "scripts/test.sh: must run as root (Postfix's master starts as root)" >&2
	exit 2
fi

install_only=0
cargo_args=()
while [ $# -gt 0 ]; do
	case $1 in
	--install-only) install_only=1; shift ;;
	--) shift; cargo_args=("$@"); break ;;
	-h | --help) sed -n '2,/^set /{/^#/s/^# \{0,1\}//p}' "$self"; exit 0 ;;
	*) echo "scripts/test.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done

# Postfix keeps its commands in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# The build's own tools: a C compiler (bundled SQLite, ring) and make (jemalloc, the daemon's
# allocator, is built from source by its configure script).
build_missing=()
for tool in cc make; do
	command -v "$tool" >/dev/null || build_missing+=("$tool")
done
if [ ${#build_missing[@]} -gt 0 ]; then
	echo "scripts/test.sh: installing build tools (missing: ${build_missing[*]})" >&2
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev make
fi

missing=()
for tool in postfix smtp-sink postqueue sendmail swaks miltertest openssl redis-server; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "scripts/test.sh: installing real peers (missing: ${missing[*]})" >&2
	case " ${missing[*]} " in *" postfix "*) installing_postfix=1 ;; esac
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix swaks miltertest openssl redis-server
fi
for tool in postfix smtp-sink postqueue sendmail swaks miltertest openssl redis-server; do
	command -v "$tool" >/dev/null || { echo "scripts/test.sh: $tool still missing after install" >&2; exit 1; }
done

# The tests never need the system instance. If one runs (a developer's own mail server) it is
# left alone: the private instances use other ports and directories. If it is running only
# because the package we just installed started it, stop it again.
if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then
	if [ "${installing_postfix:-0}" = 1 ]; then
		echo "scripts/test.sh: stopping the system Postfix the package started" >&2
		postfix stop || true
	else
		echo "scripts/test.sh: note: a system Postfix is running; the tests do not use or touch it" >&2
	fi
fi

# Sendmail (tests/sendmail.rs, packaging/sendmail/test-sendmail.sh): Debian's sendmail-bin
# conflicts with postfix, so it is never installed. Its packages are downloaded into target/
# (never committed) and unpacked per test; the unpacked binary needs m4 (to build sendmail.cf),
# libwrap0, and unshare (util-linux) to run with a qualified host name of its own.
need=()
command -v m4 >/dev/null || need+=(m4)
ldconfig -p | grep -q 'libwrap\.so\.0' || need+=(libwrap0)
command -v unshare >/dev/null || need+=(util-linux)
command -v dpkg >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
	echo "scripts/test.sh: installing for Sendmail: ${need[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" \
		|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"; }
fi
debs=target/sendmail-debs
if ! ls "$debs"/sendmail-bin_*.deb "$debs"/sendmail-base_*.deb "$debs"/sendmail-cf_*.deb >/dev/null 2>&1; then
	echo "scripts/test.sh: downloading sendmail-bin sendmail-base sendmail-cf into $debs" >&2
	mkdir -p "$debs"
	(cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf) \
		|| { apt-get update && (cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf); }
fi
# Headless Chromium renders the evidence report's HTML in tests/audit_evidence.rs (DOM figures
# and a screenshot); DejaVu gives it fonts to draw text with.
if ! command -v chromium >/dev/null || [ ! -d /usr/share/fonts/truetype/dejavu ]; then
	echo "scripts/test.sh: installing chromium and fonts (headless browser for the evidence report test)" >&2
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi
command -v chromium >/dev/null || { echo "scripts/test.sh: chromium still missing after install" >&2; exit 1; }

[ "$install_only" = 1 ] && exit 0

export MARKGATE_REQUIRE_REAL_PEERS=1
# go-md2man lets tests/manpages.rs check markgate-policy(5) byte for byte against its markdown.
command -v go-md2man >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y go-md2man >/dev/null || true
cargo test --all-targets "${cargo_args[@]}"
if [ ${#cargo_args[@]} -eq 0 ]; then
	cargo test --doc
	# The Debian package: build, dpkg -i, run as the unit would through the chroot socket, purge,
	# nothing left behind (packaging/README.md). Then the Sendmail snippet against a real Sendmail.
	packaging/test-package.sh
	packaging/sendmail/test-sendmail.sh
fi
