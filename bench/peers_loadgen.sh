#!/usr/bin/env bash
# Our batched load generator (src/bin/loadgen.rs: sendmmsg/recvmmsg, several
# sockets, thousands of queries in flight) against ddserver, Knot DNS and
# NSD with 1 and 2 workers each, on the same zone and mixed query file:
# dnsperf's single thread cannot saturate the fastest servers here, this can.
#
#   python3 ../shared/bench/gen_zone.py 1000000
#   cargo build --release -p ddserver -p ddserver-bench
#   bench/peers_loadgen.sh            # WORKERS="1 2" ROUNDS=2 DURATION=10
#
# The servers are started through the peer harness's own definitions
# (../shared/bench/servers/{knot,nsd}.sh, servers/ddserver.sh), one at a
# time. With 1 worker the server is pinned to CPU 1 and loadgen to CPU 0;
# with 2 workers neither is pinned (the machine has two cores, so loadgen
# competes with the server: the numbers show what the server does with
# what is left). Server CPU per answered query is the user+sys time of
# every process in the server's session (NSD forks) over the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-1000000}
WORKERS=${WORKERS:-1 2}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-ddserver knot nsd}
LOADGEN_ARGS=${LOADGEN_ARGS:---sockets 4 --inflight 2000}
PEERS=${PEERS:-$ROOT/../shared/bench/servers}
ZONE_DIR=${ZONE_DIR:-/tmp/dnsbench/zones/$N}
WORK=${WORK:-/tmp/ddpeers-loadgen}
export DDSERVER=${DDSERVER:-$ROOT/target/release/ddserver}
LOADGEN=$ROOT/target/release/loadgen
ZONE_NAME=dyn.example.net
QUERIES=$ZONE_DIR/q_mix.txt
LAST=$(cat "$ZONE_DIR/last_name.txt")
for f in "$DDSERVER" "$LOADGEN" "$QUERIES"; do
    [ -e "$f" ] || { echo "$0: $f is missing (see the usage above)" >&2; exit 1; }
done
mkdir -p "$WORK"

def_of() {
    case $1 in
    ddserver) echo "$ROOT/bench/servers/ddserver.sh" ;;
    *) echo "$PEERS/$1.sh" ;;
    esac
}

# CPU ticks (user+sys) of every process in session $1.
session_ticks() {
    local total=0 pid
    for pid in $(ps -s "$1" -o pid= 2>/dev/null); do
        # utime and stime, counted after the command name (NSD's holds spaces).
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
    done
    echo $total
}

run() { # server workers round
    local server=$1 workers=$2 round=$3 def port rundir sid srv_prefix=() cli_prefix=()
    def=$(def_of "$server")
    port=$(grep -m1 -oE '^PORT=[^ ]+' "$def" | sed -E 's/PORT=\$\{[A-Z_]+:-([0-9]+)\}/\1/; s/PORT=//')
    rundir=$WORK/$server-w$workers
    rm -rf "$rundir"; mkdir -p "$rundir"
    if [ "$workers" -eq 1 ]; then srv_prefix=(taskset -c 1); cli_prefix=(taskset -c 0); fi
    RUNDIR=$rundir ZONE_FILE=$ZONE_DIR/$ZONE_NAME.zone ZONE_NAME=$ZONE_NAME THREADS=$workers DEF=$def \
        setsid "${srv_prefix[@]}" bash -c 'echo $$ > "$RUNDIR/session.pid"; . "$DEF"; srv_start' \
        >"$rundir/server.log" 2>&1 </dev/null &
    until dig +short +tries=1 +time=1 -p "$port" @127.0.0.1 "$LAST" A 2>/dev/null | grep -q '^[0-9]'; do
        sleep 0.05
    done
    sid=$(cat "$rundir/session.pid")
    local t0 t1 out answered
    t0=$(session_ticks "$sid")
    # shellcheck disable=SC2086
    out=$("${cli_prefix[@]}" "$LOADGEN" --server "127.0.0.1:$port" --duration "$DURATION" \
        --queries "$QUERIES" $LOADGEN_ARGS | grep '^RESULT')
    t1=$(session_ticks "$sid")
    kill -- -"$sid" 2>/dev/null || true
    while kill -0 "$sid" 2>/dev/null; do sleep 0.1; done
    answered=$(echo "$out" | sed -E 's/.*answered_qps=([0-9.]+).*/\1/')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$workers" "$server" "$round" "$answered" \
        "$(awk -v t=$((t1 - t0)) -v q="$answered" -v d="$DURATION" \
            'BEGIN { if (q > 0) printf "%.2f", t * 10000 / (q * d); else print "NA" }')" \
        "$(echo "$out" | sed -E 's/.*loss_pct=([0-9.]+).*/\1/')"
}

echo "# $(date -Is) N=$N DURATION=$DURATION loadgen $LOADGEN_ARGS, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'workers\tserver\tround\tanswered_qps\tsrv_cpu_us_per_q\tloss_pct\n'
for workers in $WORKERS; do
    for ((r = 1; r <= ROUNDS; r++)); do
        # Rotate the order each round so no server always runs first.
        set -- $SERVERS
        for ((k = 0; k < $#; k++)); do
            idx=$(((k + r) % $# + 1))
            run "${!idx}" "$workers" "$r"
        done
    done
done
