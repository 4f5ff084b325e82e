#!/bin/bash
# Compares ddserver's I/O backends (responder/examples/echo_server.rs, a
# fixed-answer handler) with the C reference limit_responder.c, on loopback:
# server (1 worker) pinned to CPU 1, loadgen pinned to CPU 0, interleaved
# rounds in rotated order. Reports answered queries/s, server CPU us per
# answered query (/proc/PID/task/*/schedstat) and both as ratios to the
# limit responder of the same round.
#
#   ROUNDS=5 DURATION=10 NICE=-10 bench/io_backends.sh
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
NICE=${NICE:-0}
PORT=${PORT:-5391}
LOADGEN_ARGS=${LOADGEN_ARGS:---sockets 4 --inflight 1000}
LIMIT_SRC=${LIMIT_SRC:-/work/shared/bench/limit_responder.c}
OUT=${OUT:-/tmp/ddio/results-$(date -u +%Y%m%dT%H%M%S).txt}
mkdir -p /tmp/ddio
cargo build -q --release -p ddserver-bench -p ddserver-responder --example echo_server
gcc -O2 -o /tmp/ddio/limit_responder "$LIMIT_SRC"
servers=(limit portable uring)
: >"$OUT"
for ((r = 0; r < ROUNDS; r++)); do
	for ((k = 0; k < ${#servers[@]}; k++)); do
		s=${servers[$(((k + r) % ${#servers[@]}))]}
		case $s in
		limit) nice -n "$NICE" taskset -c 1 /tmp/ddio/limit_responder 127.0.0.1 "$PORT" 1 2>/dev/null & ;;
		*) nice -n "$NICE" taskset -c 1 target/release/examples/echo_server --listen 127.0.0.1:"$PORT" --workers 1 --io "$s" 2>/dev/null & ;;
		esac
		pid=$!
		sleep 0.5
		line=$(nice -n "$NICE" taskset -c 0 target/release/loadgen --server 127.0.0.1:"$PORT" --duration "$DURATION" --server-pid "$pid" $LOADGEN_ARGS | grep '^RESULT')
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		echo "round=$r server=$s $line" | tee -a "$OUT"
	done
done
python3 - "$OUT" <<'PY'
import sys, statistics, collections
rows = [dict(kv.split("=", 1) for kv in l.split() if "=" in kv) for l in open(sys.argv[1])]
by = collections.defaultdict(dict)
for r in rows:
    by[r["round"]][r["server"]] = r
print(f"\n{'server':10} {'answered q/s':>14} {'x limit':>8} {'srv CPU us/q':>13} {'x limit':>8} {'loss %':>7}   (medians over {len(by)} rounds)")
for s in ["limit", "portable", "uring"]:
    q = [float(by[k][s]["answered_qps"]) for k in by if s in by[k]]
    u = [float(by[k][s]["srv_us_per_q"]) for k in by if s in by[k]]
    l = [float(by[k][s]["loss_pct"]) for k in by if s in by[k]]
    qr = [float(by[k][s]["answered_qps"]) / float(by[k]["limit"]["answered_qps"]) for k in by if s in by[k]]
    ur = [float(by[k][s]["srv_us_per_q"]) / float(by[k]["limit"]["srv_us_per_q"]) for k in by if s in by[k]]
    print(f"{s:10} {statistics.median(q):14.0f} {statistics.median(qr):8.3f} {statistics.median(u):13.3f} {statistics.median(ur):8.3f} {statistics.median(l):7.3f}")
PY
echo "raw: $OUT"
