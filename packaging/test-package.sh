#!/usr/bin/env bash
# Build the markgate Debian package, install it with dpkg, run the installed daemon as its
# systemd unit would and deliver mail through a private Postfix to the packaged socket
# (tests/package.rs), then purge the package and prove nothing is left behind: a snapshot of
# the file system (paths, owners, modes), of the user and group databases and of dpkg's
# records, taken before the install, must equal the one taken after the purge.
#
# Usage (root, on a Debian machine with postfix and swaks installed; CI runs it from the test
# script):  packaging/test-package.sh [--deb FILE]
#   --deb FILE   install this package instead of building one with cargo deb
# Exit 0 = pass. Takes about a minute plus the release build.
set -euo pipefail

die() { echo "test-package: $*" >&2; exit 1; }
say() { echo "test-package: $*"; }

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || die "must run as root (dpkg -i, Postfix, setpriv)"
deb=
while [ $# -gt 0 ]; do
	case $1 in
	--deb) deb=$2; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done
for t in dpkg postfix swaks setpriv getent adduser; do
	command -v "$t" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null \
		|| die "$t not found (apt-get install -y postfix swaks util-linux adduser)"
done
export PATH=$PATH:/usr/sbin:/sbin
getent group postfix >/dev/null || die "group postfix missing: install postfix first"
# logrotate is only recommended by the package; the test checks the shipped rotation file with
# it, so install it before the "before" snapshot.
command -v logrotate >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y logrotate >/dev/null
if dpkg-query -W -f='${Status}' markgate 2>/dev/null | grep -q 'installed'; then
	die "markgate is already installed; dpkg --purge markgate first"
fi

work=$(mktemp -d /tmp/markgate-pkgtest.XXXXXX)
installed=
# Paths the package creates. If one exists already (a markgate run from source as root creates
# /var/log/markgate for its default audit file), it is moved aside for the test and put back
# afterwards, so the install starts from a machine without markgate.
owned=(/var/lib/markgate /var/log/markgate /var/spool/postfix/markgate /etc/markgate)
aside=()
for p in "${owned[@]}"; do
	if [ -e "$p" ]; then
		say "moving the existing $p aside for the test"
		mv "$p" "$work/aside.$(echo "$p" | tr / _)"
		aside+=("$p")
	fi
done
cleanup() {
	# A failed run must not leave the package on the machine (CI machines are reused).
	if [ -n "$installed" ]; then
		DEBIAN_FRONTEND=noninteractive dpkg --purge markgate >/dev/null 2>&1 || true
	fi
	for p in "${aside[@]}"; do
		rm -rf "$p"
		mv "$work/aside.$(echo "$p" | tr / _)" "$p"
	done
	rm -rf "$work"
}
trap cleanup EXIT

# Everything a package install can touch, with owner and mode, minus what changes by itself
# (logs, caches, dpkg's and apt's own bookkeeping, the journal) and the system Postfix queue's
# transient files. The markgate paths are never excluded.
snapshot() {
	find /etc /usr /var /opt /srv /home \
		\( -path /var/cache -o -path /var/log -o -path /var/lib/dpkg -o -path /var/lib/apt \
		-o -path /var/tmp -o -path /var/lib/systemd/catalog -o -path /var/mail \
		-o -path /var/spool/postfix/active -o -path /var/spool/postfix/incoming \
		-o -path /var/spool/postfix/deferred -o -path /var/spool/postfix/defer \
		-o -path /var/spool/postfix/maildrop -o -path /var/spool/postfix/pid \
		-o -path /var/spool/postfix/private -o -path /var/spool/postfix/public \
		-o -path /var/spool/postfix/bounce -o -path /var/spool/postfix/flush \
		-o -path /var/spool/postfix/trace -o -path /var/spool/postfix/saved \
		-o -path /var/spool/postfix/hold -o -path /var/spool/postfix/corrupt \
		-o -path /var/lib/postfix \) -prune \
		-o -printf '%p %u:%g %m\n' 2>/dev/null | LC_ALL=C sort
	find /var/log -maxdepth 1 -name 'markgate*' -printf '%p %u:%g %m\n' | LC_ALL=C sort
	echo "== passwd"; getent passwd | LC_ALL=C sort
	echo "== group"; getent group | LC_ALL=C sort
	echo "== gshadow"; LC_ALL=C sort /etc/gshadow 2>/dev/null | cut -d: -f1,4
	echo "== dpkg"; ls /var/lib/dpkg/info | grep '^markgate' || true
	dpkg-query -W -f='${Package} ${Status}\n' markgate 2>/dev/null || true
}

say "snapshot before install"
snapshot >"$work/before"

if [ -z "$deb" ]; then
	command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
	say "building the package (cargo deb)"
	cargo deb --strip >"$work/cargo-deb.log" 2>&1 || { cat "$work/cargo-deb.log"; die "cargo deb failed"; }
	deb=$(ls -t target/debian/markgate_*.deb | head -1)
fi
say "package: $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
say "contents:"
dpkg-deb --contents "$deb" | awk '{print $1, $2, $6}'
dpkg-deb --info "$deb" conffiles

say "dpkg -i"
installed=yes
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"

say "the installed unit"
unit=$(dpkg -L markgate | grep '/markgate\.service$')
systemd-analyze verify "$unit" 2>&1 | grep -v 'is not executable\|Failed to\|Command .* failed' || true
systemd-analyze security --offline=yes "$unit" | tail -1

say "running the installed daemon as the unit would (tests/package.rs)"
MARKGATE_PACKAGE_TEST=1 cargo test --test package -- --nocapture

say "logrotate with the packaged file (forced rotation, private state file)"
logrotate -d -s "$work/logrotate.state" /etc/logrotate.d/markgate >"$work/logrotate.debug" 2>&1 || true
if grep -q '^error:' "$work/logrotate.debug"; then
	cat "$work/logrotate.debug"; die "logrotate rejects /etc/logrotate.d/markgate"
fi
runuser -u markgate -- sh -c 'umask 0027; echo "{\"seq\":1}" > /var/log/markgate/audit.jsonl'
logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/markgate
rotated=$(find /var/log/markgate -name 'audit.jsonl-*' | head -1)
[ -n "$rotated" ] && grep -q '"seq":1' "$rotated" || die "audit.jsonl was not rotated by renaming"
[ "$(stat -c '%U:%G %a' /var/log/markgate/audit.jsonl)" = "markgate:markgate 640" ] \
	|| die "new audit.jsonl not created markgate:markgate 0640: $(stat -c '%U:%G %a' /var/log/markgate/audit.jsonl)"
say "rotated to $(basename "$rotated"), new audit.jsonl markgate:markgate 0640"

say "dpkg --purge"
DEBIAN_FRONTEND=noninteractive dpkg --purge markgate
installed=

say "snapshot after purge"
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
	cat "$work/diff"
	die "purge left the system different from before the install (diff above)"
fi
lines=$(grep -vc '^==' "$work/before")
say "purge left nothing behind: $lines entries compared, identical"
say "PASS"
