#!/usr/bin/env bash
# Prove packaging/sendmail/markgate.mc with a real Sendmail, beside Postfix: the quick check of
# the snippet with the `markgate run` binary. The enforcement scenarios themselves run through
# Sendmail in tests/sendmail.rs (same packages, same snippet line).
#
# Debian's sendmail-bin conflicts with postfix (both are the mail-transport-agent), so it is
# never installed here: `apt-get download` fetches sendmail-bin, sendmail-base and sendmail-cf,
# `dpkg -x` unpacks them into a private tree, m4 builds a sendmail.cf from that tree's cf/
# macros with the INPUT_MAIL_FILTER line taken verbatim from markgate.mc (only the port is
# changed to a free one), and `sendmail -bd` runs on a loopback port, relaying to Postfix's
# smtp-sink. Then:
#   1. markgate (the `markgate run` binary, listening with the Sendmail spelling
#      inet:PORT@127.0.0.1) up: a message sent with swaks is accepted, passes markgate (its
#      log shows the message) and arrives at the sink;
#   2. markgate stopped: Sendmail must answer 4xx (F=T), not pass the mail unfiltered;
#   3. markgate back: mail flows again.
#
# Usage (root): packaging/sendmail/test-sendmail.sh [--markgate BIN]
# Needs: apt access (to download the three packages once; cached in target/sendmail-debs),
# swaks, smtp-sink (postfix package), m4 and libwrap0 (installed if missing). Exit 0 = pass.
set -euo pipefail

die() { echo "test-sendmail: $*" >&2; exit 1; }
say() { echo "test-sendmail: $*"; }

cd "$(dirname "$0")/../.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || die "must run as root (sendmail -bd binds and switches users as root)"
markgate=
while [ $# -gt 0 ]; do
	case $1 in
	--markgate) markgate=$2; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done
export PATH=$PATH:/usr/sbin:/sbin
for t in swaks smtp-sink ss unshare; do command -v "$t" >/dev/null || die "$t not found (apt-get install -y postfix swaks iproute2)"; done
need=
command -v m4 >/dev/null || need="$need m4"
[ -e /usr/lib/x86_64-linux-gnu/libwrap.so.0 ] || ldconfig -p | grep -q 'libwrap\.so\.0' || need="$need libwrap0"
if [ -n "$need" ]; then
	say "installing$need"
	DEBIAN_FRONTEND=noninteractive apt-get install -y $need >/dev/null
fi
if [ -z "$markgate" ]; then
	cargo build -q --bin markgate
	markgate=$repo/target/debug/markgate
fi

# The packages, downloaded once.
debs=$repo/target/sendmail-debs
mkdir -p "$debs"
if ! ls "$debs"/sendmail-bin_*.deb >/dev/null 2>&1; then
	say "downloading sendmail-bin sendmail-base sendmail-cf"
	(cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
	ls "$debs"/sendmail-bin_*.deb >/dev/null 2>&1 || die "apt-get download failed (run apt-get update?)"
fi

T=$(mktemp -d /tmp/markgate-sendmail.XXXXXX)
chmod 755 "$T"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -s "$T/sendmail.pid" ] && kill "$(head -1 "$T/sendmail.pid")" 2>/dev/null || true
	if [ "${keep:-}" = yes ]; then echo "test-sendmail: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
keep=yes

for d in "$debs"/*.deb; do dpkg -x "$d" "$T/root"; done
smbin=$T/root/usr/libexec/sendmail/sendmail
[ -x "$smbin" ] || die "no sendmail binary in the unpacked tree"
# Sendmail insists on a fully qualified name for itself before it reads sendmail.cf; on a machine
# whose host name has no dot it sleeps a minute ("My unqualified host name ... unknown; sleeping
# for retry"), at start and in the daemon. Run it in a UTS namespace of its own with a dotted
# name; the machine's host name stays as it is.
sm() { unshare --uts sh -c 'hostname sendmail.markgate.test && exec "$0" "$@"' "$smbin" "$@"; }
version=$({ sm -d0.1 -bt -C /dev/null </dev/null 2>/dev/null || true; } | sed -n "s/^Version //p" | head -1)
say "Sendmail $version from $(basename "$debs"/sendmail-bin_*.deb)"

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
	done
}
wait_port() { # port secs
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		ss -Hltn "sport = :$1" | grep -q . && return 0
		sleep 0.1
	done
	return 1
}
SM_PORT=$(free_port); SINK_PORT=$(free_port); MILTER_PORT=$(free_port)

# smtp-sink: one file per delivered message.
mkdir -p "$T/sink" && chown postfix "$T/sink"
smtp-sink -u postfix -d "$T/sink/msg." -c "127.0.0.1:$SINK_PORT" 100 >"$T/sink.log" 2>&1 &
pids+=($!)
wait_port "$SINK_PORT" 10 || die "smtp-sink did not start"

start_markgate() {
	"$markgate" run --listen "inet:$MILTER_PORT@127.0.0.1" >>"$T/markgate.log" 2>&1 &
	markgate_pid=$!
	pids+=($markgate_pid)
	wait_port "$MILTER_PORT" 20 || { cat "$T/markgate.log"; die "markgate did not start"; }
}
start_markgate

# The snippet's filter line, exactly as shipped except for the port.
filter=$(grep '^INPUT_MAIL_FILTER' packaging/sendmail/markgate.mc)
[ -n "$filter" ] || die "no INPUT_MAIL_FILTER line in packaging/sendmail/markgate.mc"
echo "$filter" | grep -q 'S=inet:8895@127.0.0.1' || die "snippet socket changed; adjust this test"
filter=${filter/8895/$MILTER_PORT}
say "filter line: $filter"

mkdir -p "$T/queue" && chmod 700 "$T/queue"
cf=$T/root/usr/share/sendmail/cf
cat >"$T/test.mc" <<EOF
divert(-1)
include(\`$cf/m4/cf.m4')
divert(0)dnl
VERSIONID(\`markgate sendmail snippet test')dnl
OSTYPE(\`linux')dnl
define(\`confDONT_BLAME_SENDMAIL', \`GroupWritableDirPathSafe,TrustStickyBit')dnl
define(\`QUEUE_DIR', \`$T/queue')dnl
define(\`confPID_FILE', \`$T/sendmail.pid')dnl
define(\`STATUS_FILE', \`$T/statistics')dnl
define(\`ALIAS_FILE', \`')dnl
define(\`HELP_FILE', \`')dnl
define(\`confDOMAIN_NAME', \`sendmail.markgate.test')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confBIND_OPTS', \`-DNSRCH -DEFNAMES')dnl
define(\`confLOG_LEVEL', \`14')dnl
define(\`confDELIVERY_MODE', \`interactive')dnl
define(\`SMART_HOST', \`esmtp:[127.0.0.1]')dnl
define(\`ESMTP_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
define(\`SMTP_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`promiscuous_relay')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`accept_unqualified_senders')dnl
FEATURE(\`no_default_msa')dnl
DAEMON_OPTIONS(\`Port=$SM_PORT, Addr=127.0.0.1, Name=MTA')dnl
$filter
MAILER(\`smtp')dnl
EOF
m4 "$T/test.mc" >"$T/sendmail.cf" 2>"$T/m4.err" || { cat "$T/m4.err"; die "m4 failed"; }
grep -q "^Xmarkgate, S=inet:$MILTER_PORT@127.0.0.1, F=T, T=C:10s;S:10s;R:30s;E:5m" "$T/sendmail.cf" \
	|| { grep '^X' "$T/sendmail.cf"; die "the filter did not reach sendmail.cf as written"; }

say "sendmail -bd on 127.0.0.1:$SM_PORT, milter inet:$MILTER_PORT@127.0.0.1, sink :$SINK_PORT"
sm -C "$T/sendmail.cf" -bd -q1m -L sm-mta-test -O LogLevel=14 >"$T/sendmail.out" 2>&1 \
	|| { cat "$T/sendmail.out"; die "sendmail -bd failed"; }
wait_port "$SM_PORT" 30 || { cat "$T/sendmail.out"; die "sendmail did not listen"; }

send() { # id -> swaks exit code; dialog in $T/swaks.<id>
	swaks --server "127.0.0.1:$SM_PORT" --from clerk@example-council.gcsx.gov.uk \
		--to officer@partner.gcsx.gov.uk --header "Subject: sendmail snippet $1" \
		--header "Message-Id: <sendmail-$1@markgate.test>" --body "via sendmail $1" \
		>"$T/swaks.$1" 2>&1
}
wait_sink() { # id secs
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		grep -qs "sendmail-$1@markgate.test" "$T"/sink/msg.* && return 0
		sleep 0.1
	done
	return 1
}

# 1. markgate up: accepted, seen by markgate, delivered.
send 1 || { cat "$T/swaks.1"; die "message 1 refused with markgate up"; }
wait_sink 1 30 || { cat "$T/swaks.1" "$T/markgate.log"; die "message 1 not delivered"; }
grep -q 'clerk@example-council.gcsx.gov.uk' "$T/markgate.log" \
	|| { cat "$T/markgate.log"; die "markgate did not see message 1"; }
say "1: delivered through markgate ($(grep -c 'clerk@example-council' "$T/markgate.log") message(s) in its log)"

# 2. markgate down: F=T means tempfail, never unfiltered delivery.
kill "$markgate_pid"
for ((i = 0; i < 100; i++)); do ss -Hltn "sport = :$MILTER_PORT" | grep -q . || break; sleep 0.1; done
if send 2; then
	cat "$T/swaks.2"
	die "message 2 was accepted with markgate down: F=T did not take effect"
fi
reply=$(grep -E '^<\*\* +4[0-9][0-9]' "$T/swaks.2" | head -1)
[ -n "$reply" ] || { cat "$T/swaks.2"; die "message 2 refused, but not with a 4xx"; }
sleep 1
if grep -qs "sendmail-2@markgate.test" "$T"/sink/msg.*; then die "message 2 reached the sink unfiltered"; fi
say "2: markgate down -> Sendmail answered: ${reply#<** }"

# 3. markgate back: flows again.
start_markgate
send 3 || { cat "$T/swaks.3"; die "message 3 refused after markgate came back"; }
wait_sink 3 30 || die "message 3 not delivered"
say "3: markgate back -> delivered"
keep=
say "PASS"
