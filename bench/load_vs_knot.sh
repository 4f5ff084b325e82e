#!/usr/bin/env bash
# Start-up load, side by side: Knot DNS loading the benchmark zone from its
# file, then `ddserver responder` loading the same zone from an SQLite
# database, ROUNDS times. Prints, per start, the time from exec to the first
# answer, the process's CPU (user+sys) at that moment, and its resident size
# one second later.
#
#   python3 ../shared/bench/gen_zone.py 1000000
#   cargo build --release --bin ddserver
#   bench/load_vs_knot.sh                      # ZONE_DIR=/tmp/dnsbench/zones/1000000
#
# The database is imported once (`ddserver zone import`) into $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/ddserver}
ZONE_DIR=${ZONE_DIR:-/tmp/dnsbench/zones/1000000}
WORK=${WORK:-/tmp/ddload}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-5398}
ZONE=$ZONE_DIR/dyn.example.net.zone
PROBE=$(grep -m1 -oE "^h[0-9]+" "$ZONE").dyn.example.net
for tool in knotd dig; do
    command -v $tool >/dev/null || { echo "$0: $tool is missing (apt-get install knot dnsutils)" >&2; exit 1; }
done
mkdir -p "$WORK/knot"
if [ ! -f "$WORK/dd.db" ]; then
    DDSERVER_DATABASE_URL="sqlite://$WORK/dd.db.tmp" "$BIN" zone import "$ZONE" >/dev/null
    mv "$WORK/dd.db.tmp" "$WORK/dd.db"
fi
# A database imported by an older binary may lack later migrations: apply
# them now, so that no measured start runs one.
DDSERVER_DATABASE_URL="sqlite://$WORK/dd.db" "$BIN" migrate >/dev/null
cat > "$WORK/ddserver.toml" <<CONF
[database]
url = "sqlite://$WORK/dd.db"
[responder]
listen = ["127.0.0.1:$PORT"]
workers = 1
control_socket = "$WORK/responder.sock"
CONF
cat > "$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot"
template:
  - id: default
    storage: "$WORK/knot"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: dyn.example.net
    file: "$ZONE"
CONF

# measure NAME COMMAND...: start, wait for the first answer, report, stop.
measure() {
    local name=$1; shift
    local t0 t1 pid cpu rss
    t0=$(date +%s.%N)
    "$@" >"$WORK/$name.log" 2>&1 &
    pid=$!
    until dig +short +tries=1 +time=1 @127.0.0.1 -p "$PORT" "$PROBE" A 2>/dev/null | grep -q '^[0-9]'; do
        kill -0 $pid 2>/dev/null || { echo "$name exited; see $WORK/$name.log" >&2; exit 1; }
        sleep 0.02
    done
    t1=$(date +%s.%N)
    cpu=$(awk '{printf "%.2f", ($14+$15)/100}' /proc/$pid/stat)
    sleep 1
    rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
    printf '%-9s answering after %6.2f s, CPU %5s s, RSS %4d MB\n' "$name" \
        "$(echo "$t1 - $t0" | bc)" "$cpu" $((rss / 1024))
    kill -INT $pid; wait $pid 2>/dev/null || true
}

echo "# $(date -Is) $(basename "$ZONE_DIR") names, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$ROUNDS"); do
    rm -rf "$WORK/knot/"*.mdb "$WORK/knot/journal" "$WORK/knot/timers"
    measure knot knotd -c "$WORK/knot/knot.conf"
    measure ddserver "$BIN" --config "$WORK/ddserver.toml" responder
done
