# common.sh, sourced by the measuring scripts: NAME LEDGER MESSAGES from their arguments, the
# repository, the load generator, and a markgate started for NAME (pid in $p, socket in $s)
# that has already seen a warm-up of 2000 messages at CONNS connections (default 64).
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=$1 led=$2 n=$3 c=${CONNS:-64}
load=$repo/target/release/markgate-load
read -r p s < <("$here/start.sh" "$(basename "$0" .sh)-$name" "$led" "${BIN:-$repo/target/release/markgate}")
"$load" --connect "unix:$s" --eml "$repo/benches/data/small-2k.eml" --connections "$c" --messages 2000 --unique-ids >/dev/null
