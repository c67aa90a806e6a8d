#!/usr/bin/env bash
# benches/postfix-e2e.sh: Postfix end to end, smtp-source -> private Postfix -> smtp-sink.
#
#   benches/postfix-e2e.sh --milter unix:/path|inet:HOST:PORT|"" --messages N --sessions S \
#       --eml FILE [--label NAME] [--strace DIR [--milter-pid PID]]
#
# --strace DIR counts the system calls of every Postfix process while the messages flow
# (`strace -c -f` attached to Postfix's master, so it follows each smtpd, cleanup, qmgr and
# smtp it starts) into DIR/postfix.strace, and with --milter-pid those of the milter into
# DIR/milter.strace. strace slows the run: read the counts, not the rates, of such a run.
#
# Starts a throw-away Postfix on loopback (own config, queue and ports under /tmp; the system
# instance is never read or touched) relaying everything to smtp-sink, sends N copies of FILE
# with smtp-source over S parallel sessions (one message per session, as real clients do) and
# prints one JSON line: accepted msgs/s (smtp-source's wall time: this is where the milter sits,
# between DATA and the 250) and delivered msgs/s (until the sink has every message). Needs root.
# Same recipe as tests/support/postfix.rs (learnt from the shared postfix-testbed notes).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

milter="" messages=1000 sessions=8 eml="" label=postfix strace_dir="" milter_pid=""
while [ $# -gt 0 ]; do
	case $1 in
	--milter) milter=$2; shift 2 ;;
	--messages) messages=$2; shift 2 ;;
	--sessions) sessions=$2; shift 2 ;;
	--eml) eml=$(realpath "$2"); shift 2 ;;
	--label) label=$2; shift 2 ;;
	--strace) strace_dir=$(realpath "$2"); shift 2 ;;
	--milter-pid) milter_pid=$2; shift 2 ;;
	*) echo "postfix-e2e.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
[ -n "$eml" ] || { echo "postfix-e2e.sh: --eml FILE is required" >&2; exit 2; }

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
root=$(mktemp -d /tmp/markgate-pf-bench.XXXXXX)
chmod 755 "$root"
mkdir -p "$root"/{etc,spool,data}
chown postfix:postfix "$root/data"
: >"$root/maillog"
smtp_port=$(free_port)
sink_port=$(free_port)
sink_pid=""
tracers=()
stop_tracers() {
	for t in "${tracers[@]}"; do kill -INT "$t" 2>/dev/null || true; done
	for t in "${tracers[@]}"; do wait "$t" 2>/dev/null || true; done
	tracers=()
}
stop_all() {
	stop_tracers
	if [ -f "$root/spool/pid/master.pid" ]; then
		master=$(tr -d ' \n' <"$root/spool/pid/master.pid")
		kill -TERM "$master" 2>/dev/null || true
		for _ in $(seq 200); do [ -d "/proc/$master" ] || break; sleep 0.05; done
		kill -KILL -- "-$master" 2>/dev/null || true
	fi
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$root"
}
trap stop_all EXIT

cat >"$root/etc/master.cf" <<EOF
127.0.0.1:$smtp_port inet n - n - 100 smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
EOF
cat >"$root/etc/main.cf" <<EOF
compatibility_level = 3.6
config_directory = $root/etc
queue_directory = $root/spool
data_directory = $root/data
maillog_file = $root/maillog
maillog_file_prefixes = $root
myhostname = mx.example-council.gcsx.gov.uk
mydomain = example-council.gcsx.gov.uk
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$sink_port
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
default_process_limit = 100
smtpd_milters = $milter
milter_default_action = tempfail
milter_protocol = 6
milter_macro_daemon_name = ORIGINATING
EOF

smtp-sink -u postfix -4 "127.0.0.1:$sink_port" 1024 >"$root/sink.log" 2>&1 &
sink_pid=$!
postfix -c "$root/etc" check >/dev/null
postfix -c "$root/etc" start >/dev/null 2>&1
for _ in $(seq 200); do
	ss -ltn "( sport = :$smtp_port )" | grep -q LISTEN && ss -ltn "( sport = :$sink_port )" | grep -q LISTEN && break
	sleep 0.05
done

if [ -n "$strace_dir" ]; then
	mkdir -p "$strace_dir"
	master=$(tr -d ' \n' <"$root/spool/pid/master.pid")
	strace -c -f -qq -o "$strace_dir/postfix.strace" -p "$master" &
	tracers+=($!)
	if [ -n "$milter_pid" ]; then
		strace -c -f -qq -o "$strace_dir/milter.strace" -p "$milter_pid" &
		tracers+=($!)
	fi
	sleep 0.5 # attached before the first message
fi

start=$(date +%s.%N)
smtp-source -s "$sessions" -m "$messages" -F "$eml" -f alice.smith@example-council.gcsx.gov.uk \
	-t bob.jones@partner.gcsx.gov.uk "127.0.0.1:$smtp_port" 2>"$root/source.err" || {
	echo "postfix-e2e.sh: smtp-source failed: $(cat "$root/source.err")" >&2
	exit 1
}
accepted=$(date +%s.%N)
sent=0
for _ in $(seq 1200); do
	sent=$(grep -c 'status=sent' "$root/maillog" || true)
	[ "$sent" -ge "$messages" ] && break
	sleep 0.1
done
delivered=$(date +%s.%N)
stop_tracers
tempfailed=$(grep -c 'milter-reject: END-OF-MESSAGE.*4\.' "$root/maillog" || true)
/usr/bin/python3 - "$label" "$messages" "$sent" "$tempfailed" "$start" "$accepted" "$delivered" <<'EOF'
import json, sys
label, m, sent, tf, t0, t1, t2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *map(float, sys.argv[5:])
print(json.dumps({"label": label, "messages": m, "delivered": sent, "milter_tempfails": tf,
                  "accept_msgs_per_sec": round(m / (t1 - t0), 1),
                  "deliver_msgs_per_sec": round(sent / (t2 - t0), 1)}))
EOF
[ "$sent" -ge "$messages" ]
