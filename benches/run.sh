#!/usr/bin/env bash
# benches/run.sh: markgate against reference milters, in one run, as ratios.
#
#   benches/run.sh                   everything: milter load table, memory, callgrind, Postfix
#   benches/run.sh --quick           fewer messages (a smoke run of the benchmark itself)
#   benches/run.sh --only load|targets|memory|callgrind|postfix|ledger   one part
#   benches/run.sh --out DIR         keep results (results.jsonl, table.md, logs) in DIR
#
# Builds (release) markgate and markgate-load, compiles the reference milters in
# benches/reference/ with `cc ... -lmilter` (Debian libmilter-dev) and uses Debian's
# python3-milter for the pymilter one. Every milter is started fresh on a unix socket and on
# TCP; markgate-load plays Postfix against each with benches/data/small-2k.eml and
# large-200k.eml at 1, 8 and 64 connections. The table gives msgs/s, p50 and CPU per message,
# and markgate's ratios against the references measured in this same run. Needs root only for
# the Postfix part (Postfix's master starts as root). Never run it while judging a change by a
# single number on a busy machine: the ratios are what to read (see BENCHMARKS.md).
set -euo pipefail
self=$(realpath "$0")
repo=$(dirname "$(dirname "$self")")
cd "$repo"
export PATH="$PATH:/usr/sbin:/sbin"

quick=0
only=all
out=""
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1; shift ;;
	--only) only=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "benches/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done

work=$(mktemp -d /tmp/markgate-bench.XXXXXX)
chmod 755 "$work"
[ -n "$out" ] || out="$work/out"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# 1000 idle connections plus the milter's own descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The benchmark's own peers (Debian packages): the libmilter headers for the reference milters,
# pymilter, valgrind for the instruction count, Postfix's smtp-source. Installed when missing
# and we may (root with apt-get), as scripts/test.sh does for the test peers.
need=()
[ -e /usr/include/libmilter/mfapi.h ] || need+=(libmilter-dev)
/usr/bin/python3 -c 'import Milter' 2>/dev/null || need+=(python3-milter)
command -v valgrind >/dev/null || need+=(valgrind)
command -v strace >/dev/null || need+=(strace)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "== installing ${need[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 ||
		echo "   could not install ${need[*]}; the parts that need them will fail or be skipped" >&2
fi

echo "== building (release)" >&2
cargo build --release --quiet --bin markgate --bin markgate-load
markgate="$repo/target/release/markgate"
load="$repo/target/release/markgate-load"
cc -O2 -Wall -o "$work/ref-nothing" benches/reference/nothing.c -lmilter -lpthread
cc -O2 -Wall -o "$work/ref-disclaimer" benches/reference/disclaimer.c -lmilter -lpthread
python=/usr/bin/python3
$python -c 'import Milter' 2>/dev/null || {
	echo "benches/run.sh: python3-milter missing (apt-get install -y python3-milter)" >&2
	exit 1
}

# markgate as shipped (default policy), audit with sync = "batch" once the build has [audit];
# a unix socket other users may reach (Postfix's daemons run as `postfix`).
write_config() { # $1 = listen spec, $2 = file, $3 = ledger backend (default sqlite), $4 = audit sync (default batch)
	{
		echo "listen = \"$1\""
		echo "[socket]"
		echo "mode = \"0666\""
		echo "[limits]"
		echo "max_connections = 2000"
		if grep -q '^\[audit\]' config/markgate.toml; then
			echo "[audit]"
			echo "path = \"$work/audit/audit.jsonl\""
			echo "sync = \"${4:-batch}\""
			# The cheaper flush (zero-filled space overwritten: no size change to commit), when
			# the build has it; the disk probe below measures both ways.
			if grep -q '^#\{0,1\}preallocate' config/markgate.toml; then
				echo "preallocate = 4194304"
			fi
		fi
		# The thread ledger (issue 12) in the work directory, fresh per run; "off" for the
		# ledger-off half of the ledger comparison.
		if grep -q '^\[ledger\]' config/markgate.toml; then
			echo "[ledger]"
			echo "backend = \"${3:-sqlite}\""
			echo "path = \"$work/ledger.sqlite\""
		fi
	} >"$2"
}
mkdir -p "$work/audit"

# What each milter must do to every message (checked by markgate-load, so a fast wrong answer
# is an error, not a win). markgate's own expectation is overridable while the policy evolves.
ref_expect=(--expect-header X-Reference-Label --expect-replbody --expect-body-contains "monitored or recorded")
if [ -n "${MARKGATE_EXPECT:-}" ]; then
	read -r -a mg_expect <<<"$MARKGATE_EXPECT"
elif grep -q 'policy::' src/filter.rs 2>/dev/null; then
	# The shipped UK GPMS policy on PROTECT mail going out: label header + disclaimer.
	mg_expect=(--expect-header X-Protective-Marking --expect-replbody --expect-body-contains "recording and/or monitoring")
else
	mg_expect=() # pass-through build: every message passes unchanged
fi

sock() { echo "$work/$1.sock"; }
free_port() { $python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME TRANSPORT: start milter NAME listening on TRANSPORT (unix|tcp); sets $spec $pid.
start() {
	local name=$1 transport=$2 listen
	if [ "$transport" = unix ]; then
		spec="unix:$(sock "$name")"
		rm -f "$(sock "$name")"
		listen_lib=$spec
	else
		local port
		port=$(free_port)
		spec="inet:127.0.0.1:$port"
		listen_lib="inet:$port@127.0.0.1"
	fi
	case $name in
	markgate | markgate-ledger-on | markgate-ledger-off | markgate-nosync)
		rm -f "$work/ledger.sqlite" "$work/ledger.sqlite-wal" "$work/ledger.sqlite-shm"
		if [ "$name" = markgate-ledger-off ]; then write_config "$spec" "$work/markgate.toml" off
		elif [ "$name" = markgate-nosync ]; then write_config "$spec" "$work/markgate.toml" sqlite none
		else write_config "$spec" "$work/markgate.toml"; fi
		"$markgate" run --config "$work/markgate.toml" 2>>"$out/markgate.log" &
		;;
	libmilter-nothing) (umask 0; exec "$work/ref-nothing" "$listen_lib") 2>>"$out/ref.log" & ;;
	libmilter-disclaimer) (umask 0; exec "$work/ref-disclaimer" "$listen_lib") 2>>"$out/ref.log" & ;;
	pymilter-disclaimer) (umask 0; exec $python benches/reference/disclaimer.py "$listen_lib") 2>>"$out/ref.log" & ;;
	esac
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		if [ "$transport" = unix ]; then [ -S "$(sock "$name")" ] && break
		else (exec 3<>"/dev/tcp/127.0.0.1/${spec##*:}") 2>/dev/null && break; fi
		sleep 0.05
	done
	# Let the listener settle (the TCP probe above was a connection the milter had to close).
	sleep 0.2
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

expect_for() { if [ "${1%%-ledger-*}" = markgate ] || [ "$1" = markgate-nosync ]; then echo mg; elif [ "$1" = libmilter-nothing ]; then echo none; else echo ref; fi; }

run_load() { # name transport msgfile conns count [label]
	local name=$1 transport=$2 msg=$3 conns=$4 count=$5 e
	e=$(expect_for "$name")
	# Every message its own Message-ID, as real mail: markgate's thread ledger files each one.
	local args=(--connect "$spec" --eml "benches/data/$msg" --connections "$conns" --messages "$count"
		--warmup $((conns * 2)) --unique-ids --pid "$pid" --json --label "${6:-$name|$transport|$msg|$conns}")
	case $e in
	mg) args+=("${mg_expect[@]}") ;;
	ref) args+=("${ref_expect[@]}") ;;
	esac
	if [ -n "${per_connection:-}" ]; then args+=(--per-connection "$per_connection"); fi
	if ! "$load" "${args[@]}" >>"$results"; then
		echo "   $name $transport $msg ${conns}c: wrong answers or errors (see $results)" >&2
	fi
}

milters=(libmilter-nothing libmilter-disclaimer pymilter-disclaimer markgate)

# The audit disk's flush latency, the floor under markgate's answer with `sync = "batch"`: with
# one connection every answer waits for one flush. Measured in the directory of the audit file,
# before and after the load runs (other tenants of the disk move it), for each way of making a
# record-sized line durable, interleaved round by round so that they see the same disk:
#   append+fdatasync     what the writer does by default (the size changes: a journal commit)
#   prealloc+fdatasync   overwrite a zero-filled, synced region (`[audit] preallocate`): no
#                        metadata to commit
#   append+O_DSYNC       the write itself synchronous
#   prealloc+O_DSYNC     both
#   direct+O_DSYNC       prealloc+O_DSYNC past the page cache (O_DIRECT): the 4 KiB block that
#                        holds the line is written again whole, as a writer would have to
#   direct+fdatasync     O_DIRECT writes as above, then fdatasync (session 27 tried this in
#                        the writer and took it out: no gain in the daemon, BENCHMARKS.md)
# Each method also gives the system CPU per write + sync (this thread's getrusage): a sync
# takes CPU from the messages, not only time.
fsync_probe() { # $1 = before|after
	$python - "$work/audit" "$1" <<'PROBE'
import json, os, resource, sys, time
d, when = sys.argv[1], sys.argv[2]
line = b"x" * 299 + b"\n"
rounds, per = 10, 300
region = rounds * per * len(line) + 4096
def prealloc(path, extra):
    # Zero-filled and synced, then opened again for the records, as markgate's writer does.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"\0" * region)
    os.fsync(fd)
    os.close(fd)
    return os.open(path, os.O_WRONLY | extra)
class Direct:
    """Whole, aligned 4 KiB blocks through O_DIRECT: the block holding the end of the data
    is kept in an aligned buffer and written again with each line."""
    def __init__(self, path, dsync=True):
        import mmap
        os.close(prealloc(path, 0))
        self.fd = os.open(path, os.O_WRONLY | os.O_DIRECT | (os.O_DSYNC if dsync else 0))
        self.buf, self.at = mmap.mmap(-1, 8192), 0
    def write(self, data):
        block, cut = self.at - self.at % 4096, self.at % 4096
        self.buf[cut:cut + len(data)] = data
        end = cut + len(data)
        os.pwrite(self.fd, memoryview(self.buf)[:(end + 4095) // 4096 * 4096], block)
        self.at += len(data)
        if end >= 4096:
            self.buf[:end - 4096] = self.buf[4096:end]
            self.buf[end - 4096:] = bytes(8192 - (end - 4096))
methods = {
    "append+fdatasync": (lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600), True),
    "prealloc+fdatasync": (lambda p: prealloc(p, 0), True),
    "append+O_DSYNC": (lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_DSYNC, 0o600), False),
    "prealloc+O_DSYNC": (lambda p: prealloc(p, os.O_DSYNC), False),
    "direct+O_DSYNC": (Direct, False),
    "direct+fdatasync": (lambda p: Direct(p, dsync=False), True),
}
fds = {m: open_(os.path.join(d, "probe-" + m.replace("+", "-"))) for m, (open_, _) in methods.items()}
lat = {m: [] for m in methods}
sys_us = {m: 0.0 for m in methods}
for _ in range(rounds):
    for m, (_, datasync) in methods.items():
        fd = fds[m]
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_stime
        for _ in range(per):
            t = time.perf_counter()
            fd.write(line) if isinstance(fd, Direct) else os.write(fd, line)
            if datasync:
                os.fdatasync(fd.fd if isinstance(fd, Direct) else fd)
            lat[m].append((time.perf_counter() - t) * 1e6)
        sys_us[m] += (resource.getrusage(resource.RUSAGE_THREAD).ru_stime - before) * 1e6
for m, fd in fds.items():
    os.close(fd.fd if isinstance(fd, Direct) else fd)
    os.unlink(os.path.join(d, "probe-" + m.replace("+", "-")))
for m, l in lat.items():
    l.sort()
    print(json.dumps({"label": f"disk|{m}|{when}", "appends": len(l),
                      "p50_us": round(l[len(l) // 2]), "p99_us": round(l[len(l) * 99 // 100]),
                      "sys_us": round(sys_us[m] / len(l), 1)}))
PROBE
}

if [ "$only" = all ] || [ "$only" = load ]; then
	echo "== audit disk: flush latency of each method" >&2
	fsync_probe before >>"$results"
	for transport in unix tcp; do
		for name in "${milters[@]}"; do
			echo "== load: $name over $transport" >&2
			start "$name" "$transport"
			for msg in small-2k.eml large-200k.eml; do
				for conns in 1 8 64; do
					if [ "$msg" = small-2k.eml ]; then n=4000; else n=600; fi
					[ "$quick" = 1 ] && n=$((n / 10))
					# libmilter and pymilter over TCP stall ~40 ms per reply (Nagle with delayed
					# ACK); fewer messages give the same rate in bearable time.
					if [ "$transport" = tcp ] && [ "$name" != markgate ]; then n=$((n / 10)); fi
					[ "$name" = pymilter-disclaimer ] && n=$((n / 4))
					[ "$n" -lt "$((conns * 4))" ] && n=$((conns * 4))
					run_load "$name" "$transport" "$msg" "$conns" "$n"
				done
			done
			stop
		done
	done
	fsync_probe after >>"$results"
fi

# Issue 15's targets, markgate against the libmilter header+disclaimer reference: alternated
# round by round (five rounds), so the machine's drift hits both alike; the table gives the
# median of the per-round ratios and their range. (The load table above runs each milter once,
# minutes apart: a neighbour's build during one of them moves its ratio more than any change.)
if [ "$only" = all ] || [ "$only" = targets ]; then
	for round in 1 2 3 4 5; do
		# markgate-nosync: the same daemon with `sync = "none"` (records written, never
		# fsynced: not a setting to run), to show what bounds markgate where the flush does.
		# markgate-ledger-off: the same daemon without the thread ledger (`backend = "off"`,
		# the flush kept), to show in the same rounds what the ledger, work the reference
		# does not do, costs against it.
		for name in libmilter-disclaimer markgate markgate-nosync markgate-ledger-off; do
			echo "== targets: $name (round $round)" >&2
			start "$name" unix
			# 8/1: 8 connections, each closed after one message and opened again, as Postfix
			# does (its smtpd opens the milter connection per SMTP session, and most clients
			# send one message per session). Not one of the issue's targets: it shows what
			# the per-connection work (accept, negotiation, close) does to the ratio.
			for case in small-2k.eml:1:6000 small-2k.eml:8:16000 small-2k.eml:64:24000 large-200k.eml:1:1000 small-2k.eml:8/1:8000; do
				IFS=: read -r msg conns n <<<"$case"
				[ "$quick" = 1 ] && n=$((n / 10))
				per_connection=
				[ "${conns#*/}" != "$conns" ] && per_connection=${conns#*/}
				run_load "$name" unix "$msg" "${conns%/*}" "$n" "target|$name|$msg|$conns"
			done
			per_connection=
			stop
		done
	done
fi

# Thread ledger on (SQLite, the default) against off, in the same run: 64 connections for
# throughput, 1 connection for the p50 each message pays. Alternated on/off five times so
# drift of the shared machine hits both alike (the table gives the median, and the median of
# the per-round ratios, which a drift between rounds does not move), and long enough
# (seconds, not a fraction of one) that a stray process on the machine is not the result.
# Generate and time a 10-million-entry ledger with `cargo bench --bench ledger_scale`
# (minutes; not part of this script).
if [ "$only" = all ] || [ "$only" = ledger ]; then
	for round in 1 2 3 4 5; do
		for name in markgate-ledger-on markgate-ledger-off; do
			echo "== ledger: $name (round $round)" >&2
			start "$name" unix
			for conns in 64 1; do
				n=30000
				[ "$conns" = 1 ] && n=3000
				[ "$quick" = 1 ] && n=$((n / 10))
				run_load "$name" unix small-2k.eml "$conns" "$n"
			done
			stop
		done
	done
fi

if [ "$only" = all ] || [ "$only" = memory ]; then
	echo "== memory: 1000 idle connections, one 50 MiB message" >&2
	$python - "$work/big-50m.eml" <<'EOF'
import base64, os, sys
with open(sys.argv[1], "w") as f:
    f.write("From: Alice Smith <alice.smith@example-council.gcsx.gov.uk>\nTo: bob.jones@partner.gcsx.gov.uk\n"
            "Subject: PROTECT: the archive\nMessage-ID: <bench-50m@example-council.gcsx.gov.uk>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"b50\"\n\n--b50\nContent-Type: text/plain\n\n"
            "The archive is attached.\n\n--b50\nContent-Type: application/octet-stream\n"
            "Content-Transfer-Encoding: base64\n\n")
    chunk = base64.encodebytes(os.urandom(57 * 1024 * 16)).decode()
    while f.tell() < 50 * 1024 * 1024:
        f.write(chunk)
    f.write("\n--b50--\n")
EOF
	for name in markgate libmilter-disclaimer; do
		start "$name" unix
		"$load" --connect "$spec" --idle 1000 --hold 2 --pid "$pid" --label "$name|idle1000" >>"$results" ||
			echo "   $name: not every idle connection was served" >&2
		e=$(expect_for "$name")
		args=(--connect "$spec" --eml "$work/big-50m.eml" --messages 1 --pid "$pid" --json --label "$name|unix|50MiB|1" --timeout 300)
		if [ "$e" = ref ]; then args+=(--expect-replbody); else args+=("${mg_expect[@]}"); fi
		"$load" "${args[@]}" >>"$results" || echo "   $name: 50 MiB message failed" >&2
		stop
	done
	rm -f "$work/big-50m.eml"
fi

if [ "$only" = all ] || [ "$only" = callgrind ]; then
	if command -v valgrind >/dev/null; then
		echo "== callgrind: instructions per message (markgate, small-2k, unix, 1 connection)" >&2
		irs=()
		for n in 50 250; do
			rm -f "$(sock markgate)"
			write_config "unix:$(sock markgate)" "$work/markgate.toml"
			valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$n" \
				"$markgate" run --config "$work/markgate.toml" 2>>"$out/callgrind.log" &
			pid=$!
			pids+=("$pid")
			for _ in $(seq 400); do [ -S "$(sock markgate)" ] && break; sleep 0.05; done
			# Unique Message-IDs as real mail has (since session 20): with one id repeated, the
			# ledger's key filter let every message's own id through to an SQLite read.
			"$load" --connect "unix:$(sock markgate)" --eml benches/data/small-2k.eml --messages "$n" \
				--unique-ids --timeout 600 "${mg_expect[@]}" >/dev/null || echo "   callgrind run: wrong answers" >&2
			kill -TERM "$pid"
			wait "$pid" || true
			irs+=("$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$work/callgrind.$n" | head -1)")
		done
		echo "{\"label\":\"markgate|callgrind\",\"ir_50\":${irs[0]},\"ir_250\":${irs[1]},\"ir_per_msg\":$(((irs[1] - irs[0]) / 200))}" >>"$results"
		cp "$work/callgrind.250" "$out/" 2>/dev/null || true
	else
		echo "   valgrind not installed: no instruction count" >&2
	fi
fi

if [ "$only" = all ] || [ "$only" = postfix ]; then
	if [ "$(id -u)" = 0 ] && command -v postfix >/dev/null && command -v smtp-source >/dev/null; then
		echo "== Postfix end to end: smtp-source -> Postfix -> smtp-sink" >&2
		m=2000
		[ "$quick" = 1 ] && m=200
		# Three rounds, alternating, so the machine's drift hits every milter alike; the table
		# gives the median and the range. The do-nothing milter is the floor: what Postfix
		# pays for talking to any milter at all on this machine.
		for round in 1 2 3; do
			for name in none libmilter-nothing libmilter-disclaimer markgate; do
				echo "   round $round: $name" >&2
				if [ "$name" = none ]; then milter=""; else start "$name" unix; milter=$spec; fi
				benches/postfix-e2e.sh --milter "$milter" --messages "$m" --sessions 8 \
					--eml benches/data/small-2k.eml --label "postfix|$name" >>"$results" ||
					echo "   Postfix run with $name failed" >&2
				[ "$name" = none ] || stop
			done
		done
	else
		echo "   Postfix part skipped: needs root, postfix and smtp-source" >&2
	fi
fi

$python benches/table.py "$results" | tee "$out/table.md"
echo "results: $out" >&2
