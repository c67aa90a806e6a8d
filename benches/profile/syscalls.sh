#!/usr/bin/env bash
# syscalls.sh NAME LEDGER MESSAGES: system calls and context switches per message at CONNS
# connections (default 64), counted by `perf stat` on markgate. Env: BIN.
set -euo pipefail
# shellcheck source=benches/profile/common.sh
. "$(dirname "$0")/common.sh"
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
while kill -0 "$p" 2>/dev/null; do sleep 0.05; done # not our child: started by start.sh
awk -F, -v n="$n" '$1 ~ /^[0-9]/ && $1 > 0 {printf "%8.3f %s\n", $1/n, $3}' "/tmp/syscalls-$name.txt"
