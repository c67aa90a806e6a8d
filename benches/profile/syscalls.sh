#!/usr/bin/env bash
# syscalls.sh NAME LEDGER MESSAGES: system calls and context switches per message at CONNS
# connections (default 64), counted by `perf stat` on markgate. Env: BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=$1 led=$2 n=$3 c=${CONNS:-64}
load=$repo/target/release/markgate-load
read -r p s < <("$here/start.sh" "syscalls-$name" "$led" "${BIN:-$repo/target/release/markgate}")
"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" --messages 2000 --unique-ids >/dev/null
events=raw_syscalls:sys_enter,context-switches
for sc in fdatasync futex write pwrite64 writev sendmsg recvfrom read epoll_wait fcntl pread64; do
	events+=",syscalls:sys_enter_$sc"
done
perf stat -x, -e "$events" -p "$p" -o "/tmp/syscalls-$name.txt" &
pp=$!
sleep 0.3
"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" --messages "$n" \
	--unique-ids --pid "$p" --json --label "$name"
kill -INT "$pp"
wait "$pp" || true
kill "$p"
wait "$p" 2>/dev/null || true
awk -F, -v n="$n" '$1 ~ /^[0-9]/ && $1 > 0 {printf "%8.3f %s\n", $1/n, $3}' "/tmp/syscalls-$name.txt"
