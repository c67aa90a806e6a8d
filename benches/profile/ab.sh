#!/usr/bin/env bash
# ab.sh BIN_A BIN_B [CONNS] [MESSAGES] [ROUNDS]: two markgate builds alternated round by
# round (A, B, A, B, ...), each started fresh by start.sh (ledger off, sync = "batch",
# preallocated audit file) and warmed up with 2 000 messages. Per round: msgs/s, the daemon's
# CPU µs per message (all threads' run time from /proc/PID/task/*/schedstat, in nanoseconds)
# and its split into user and system (/proc/PID/stat, sampled at the clock tick: only a
# rough split; a thread that ends during a round drops out of both). Then each build's
# means and B/A. Env: SYNC.
# Copy the binaries out of target/ first (see README: "A/B of two builds").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
a=$1 b=$2 c=${3:-8} n=${4:-30000} rounds=${5:-4}
load=$repo/target/release/markgate-load
tck=$(getconf CLK_TCK)
cpu() { echo "$(awk '{print $14, $15}' "/proc/$1/stat") $(cat /proc/"$1"/task/*/schedstat | awk '{t += $1} END {printf "%d", t / 1000}')"; }
one() { # $1 = label, $2 = binary
	local p s u0 s0 r0 u1 s1 r1 out rate
	read -r p s < <("$here/start.sh" "ab-$1" off "$2")
	"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" \
		--messages 2000 --unique-ids >/dev/null
	read -r u0 s0 r0 < <(cpu "$p")
	out=$("$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" \
		--connections "$c" --messages "$n" --unique-ids)
	read -r u1 s1 r1 < <(cpu "$p")
	kill "$p"
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done # not our child: started by start.sh
	rate=$(echo "$out" | sed -n 's/.* in [0-9.]*s: \([0-9]*\) msg\/s.*/\1/p')
	echo "$1 $rate $(((u1 - u0) * 1000000 / tck / n)) $(((s1 - s0) * 1000000 / tck / n)) $(((r1 - r0) / n))"
}
for _ in $(seq "$rounds"); do
	one A "$a"
	one B "$b"
done | awk -v c="$c" -v n="$n" '
	{ print "round " $1 ": " $2 " msgs/s, CPU " $5 " µs (user " $3 ", system " $4 ")"
	  r[$1] += $2; u[$1] += $3; s[$1] += $4; t[$1] += $5; k[$1]++ }
	END {
	  for (x in r) printf "%s mean (%d rounds, %d connections, %d messages): %.0f msgs/s, CPU %.1f µs (user %.1f, system %.1f)\n", x, k[x], c, n, r[x] / k[x], t[x] / k[x], u[x] / k[x], s[x] / k[x]
	  if (r["A"] > 0) printf "B/A msgs/s: %.3f, CPU per message: %.3f\n", (r["B"] / k["B"]) / (r["A"] / k["A"]), t["B"] / t["A"]
	}'
