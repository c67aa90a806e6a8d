#!/usr/bin/env bash
# start.sh NAME LEDGER [BIN]: start a release markgate for profiling, print "PID SOCKET".
#   LEDGER: sqlite | off. Env: SYNC (audit sync, default batch), LEDGER_DIR (where the ledger
#   file goes, default the work directory; e.g. /dev/shm to take the disk out), WRAP (a
#   command to run markgate under, e.g. valgrind with its options).
# Work directory: ${PROFILE_DIR:-/tmp/markgate-profile}/NAME (removed first).
set -euo pipefail
name=$1 led=$2
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${3:-$repo/target/release/markgate}
w=${PROFILE_DIR:-/tmp/markgate-profile}/$name
rm -rf "$w"
mkdir -p "$w/audit"
cat >"$w/markgate.toml" <<T
listen = "unix:$w/m.sock"
[socket]
mode = "0666"
[limits]
max_connections = 2000
[audit]
path = "$w/audit/audit.jsonl"
sync = "${SYNC:-batch}"
preallocate = 4194304
[ledger]
backend = "$led"
path = "${LEDGER_DIR:-$w}/ledger-$name.sqlite"
T
rm -f "${LEDGER_DIR:-$w}/ledger-$name.sqlite"*
cd "$repo"
# shellcheck disable=SC2086 # WRAP is a command and its words
${WRAP:-} "$bin" run --config "$w/markgate.toml" 2>>"$w/log" &
p=$!
for _ in $(seq 400); do [ -S "$w/m.sock" ] && break; sleep 0.05; done
sleep 0.2
echo "$p $w/m.sock"
