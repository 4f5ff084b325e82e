#!/usr/bin/env bash
# Benchmark of the dyndns2 updater: `ddserver serve` with HOSTS hosts, driven
# by wrk (Debian's `wrk`) over CONNS keep-alive connections with
# bench/updater/dyndns2.lua, in three modes: changed addresses (each a
# commit), unchanged addresses (`nochg`, answered without a write) and wrong
# passwords (each an argon2 run; failure limits lifted so they are measured,
# not refused). Then the time from `good` to the new answer being served
# (bench/updater/served_delay.py).
#
#   DB=sqlite  bench/updater.sh
#   DB=mariadb bench/updater.sh     # MariaDB at $MYSQL_URL (root, no password)
#
# Settings (environment): BIN (default target/release/ddserver), HOSTS
# (1000), CONNS (64), THREADS (2), DURATION (10 s per mode), SAMPLES (200),
# HOST_MIRROR_MAX (updater.host_mirror_max; 0 switches the host mirror off,
# so every request reads its host's row as before the mirror), MODES (which
# runs, in order; default "http empty nochg flood change wrong served";
# also "tls", "fresh", "fresh_tls": nochg over https, and on a new
# connection per request over http and https), PACE_MS (each connection
# waits that long after each answer: a paced load of about
# CONNS * 1000 / PACE_MS requests/s instead of as many as wrk can send),
# PERF (a directory: profile the server during each measured mode).
# MODES=statements (DB=mariadb): what MariaDB runs per update (statements,
# pings, prepares, from its global status counters, so run it on a server
# nothing else uses): N (200) updates of h1, one at a time with curl, for
# `nochg`, a changed address and a wrong password.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ddserver}
DB=${DB:-sqlite}
HOSTS=${HOSTS:-1000}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10}
SAMPLES=${SAMPLES:-200}
HOST_MIRROR_MAX=${HOST_MIRROR_MAX:-2000000}
MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306}
ZONE=dyn.example.net
SECRET=bench-secret

for tool in wrk curl python3 openssl; do
    command -v $tool >/dev/null || { echo "bench/updater.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "bench/updater.sh: build $BIN first (cargo build --release --bin ddserver)" >&2; exit 1; }

work=$(mktemp -d)
pid=
database=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    if [ -n "$database" ]; then
        mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $database" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(port)
https_port=$(port)
dns_port=$(port)
# A self-signed pair for the https listener (modes fresh_tls, tls).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

case $DB in
    sqlite) url="sqlite://$work/dd.db" ;;
    mariadb)
        database=ddbench_$$
        mariadb -h127.0.0.1 -uroot -e "CREATE DATABASE $database"
        url="$MYSQL_URL/$database" ;;
    *) echo "DB must be sqlite or mariadb" >&2; exit 2 ;;
esac

cat > "$work/ddserver.toml" <<TOML
[updater]
listen = ["127.0.0.1:$http_port"]
tls_listen = ["127.0.0.1:$https_port"]
tls_cert = "$work/cert.pem"
tls_key = "$work/key.pem"
changes_per_host = 100000
changes_refill = 1
failed_auth_per_address = 100000
failed_auth_per_host = 100000
failed_auth_refill = 1
host_mirror_max = $HOST_MIRROR_MAX
# One load generator on one address stands for many routers.
max_connections_per_address = 1000000
new_connections_per_address = 0

[database]
url = "$url"

[responder]
listen = ["127.0.0.1:$dns_port"]
workers = 1
control_socket = "$work/responder.sock"

[log]
filter = "warn"
TOML

dd() { "$BIN" --config "$work/ddserver.toml" "$@"; }
dd zone add $ZONE --ns ns1.example.net >/dev/null
echo benchpw | dd user add bench --email bench@example.org --max-hosts 100000000 --password-stdin >/dev/null
echo $SECRET | dd host add h1.$ZONE --user bench --password-stdin >/dev/null
# The other hosts share h1's secret hash: copied in SQL, since hashing each
# secret (~20 ms of argon2) would dominate the set-up.
case $DB in
    sqlite) sqlite3 "$work/dd.db" "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, created_at, updated_at)
        SELECT h.zone_id, 'h' || c.n, 'h' || c.n || '.$ZONE', h.user_id, h.secret_hash, 0, 0
        FROM hosts h, (WITH RECURSIVE c(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM c WHERE n < $HOSTS) SELECT n FROM c) c
        WHERE h.fqdn = 'h1.$ZONE'" ;;
    mariadb) mariadb -h127.0.0.1 -uroot "$database" -e "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, created_at, updated_at)
        SELECT h.zone_id, CONCAT('h', s.seq), CONCAT('h', s.seq, '.$ZONE'), h.user_id, h.secret_hash, 0, 0
        FROM hosts h, seq_2_to_$HOSTS s WHERE h.fqdn = 'h1.$ZONE'" ;;
esac

# Not through the `dd` function: $! must be the server itself, or the
# cleanup would kill a subshell and leave the server running.
"$BIN" --config "$work/ddserver.toml" serve > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$http_port/healthz" && break
    sleep 0.1
done

auth=$(printf 'bench:%s' $SECRET | base64 -w0)
wrong=$(printf 'bench:%s' wrong | base64 -w0)
url="http://127.0.0.1:$http_port"
https_url="https://127.0.0.1:$https_port"

# Warm-up: every host gets 192.0.2.1 and its credentials verified once
# (argon2), so the nochg run measures the cached path.
seq 1 "$HOSTS" | xargs -P 4 -I{} curl -s -o /dev/null -u "bench:$SECRET" \
    "$url/nic/update?hostname=h{}.$ZONE&myip=192.0.2.1"

echo "# $DB, $HOSTS hosts, host_mirror_max $HOST_MIRROR_MAX, $CONNS connections, $THREADS wrk threads, ${DURATION}s per mode, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run_wrk() { # MODE THREADS [SECONDS [URL]]
    MODE=$1 HOSTS=$HOSTS THREADS=$2 AUTH=$auth WRONG_AUTH=$wrong \
        wrk -t "$2" -c "$CONNS" -d "${3:-$DURATION}s" -s bench/updater/dyndns2.lua "${4:-$url}"
}
# The server's CPU time (user + system, in clock ticks), so each mode also
# reports CPU per answer: a cost that the other load on a shared machine
# does not change the way it changes answers/s.
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
# DB=mariadb: the database server's CPU too (it runs on the same cores), so
# that work moved from the updater into queries is not hidden.
db_pid=
[ "$DB" = mariadb ] && db_pid=$(pgrep -x -o mariadbd || true)
db_ticks() { if [ -n "$db_pid" ]; then awk '{print $14 + $15}' "/proc/$db_pid/stat"; else echo 0; fi; }
# PERF=DIR: also record the server with `perf record -g` during each
# measured mode, into DIR/MODE.perf (the profile behind the CPU per answer).
profile() { # MODE: starts perf on the server for the next DURATION seconds
    [ -n "${PERF:-}" ] || return 0
    mkdir -p "$PERF"
    perf record -F 1999 -g -p "$pid" -o "$PERF/$1.perf" -- sleep "$((DURATION - 1))" >/dev/null 2>&1 &
}
measured() { # MODE COMMAND...: runs COMMAND (a wrk run), prints its summary
    # and the server's CPU per answer (answers counted by the Lua script,
    # else wrk's request count)
    local mode=$1 before after db_before db_after out answers
    shift
    profile "$mode"
    before=$(ticks)
    db_before=$(db_ticks)
    out=$("$@")
    after=$(ticks)
    db_after=$(db_ticks)
    echo "$out" | grep -E '^(answers|latency|Requests/sec)'
    answers=$(echo "$out" | awk '/^answers/ {n += $3} /requests in/ {r = $1} END {print (n > 0 ? n : r) + 0}')
    [ "$answers" -gt 0 ] && awk -v t=$((after - before)) -v hz="$hz" -v n="$answers" \
        'BEGIN {printf "server CPU per answer: %.1f us\n", t / hz * 1e6 / n}'
    if [ "$answers" -gt 0 ] && [ -n "$db_pid" ]; then
        awk -v t=$((db_after - db_before)) -v hz="$hz" -v n="$answers" \
            'BEGIN {printf "database CPU per answer: %.1f us\n", t / hz * 1e6 / n}'
    fi
}
# Default order: nochg and the flood first, since `change` moves every host
# away from 192.0.2.1. `http`: /healthz through the same wrk, the ceiling
# of what this machine can drive at all.
for mode in ${MODES:-http empty nochg flood change wrong served}; do
    case $mode in
        http)
            echo "## http (/healthz, no Lua: the harness ceiling)"
            # The server's CPU per /healthz answer is the floor of any
            # request (TCP receive, hyper, TCP send), against which nochg
            # compares.
            measured http wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" "$url/healthz" ;;
        empty)
            # The nochg request's bytes and Lua work, sent to /healthz: the
            # floor for nochg without wrk's Lua cost in the comparison
            # (a slower client changes how often each side sleeps and is
            # woken, which the server's CPU per answer includes).
            echo "## empty (the nochg request, sent to /healthz)"
            measured empty run_wrk empty "$THREADS" ;;
        nochg|change|wrong)
            echo "## $mode"
            measured "$mode" run_wrk "$mode" "$THREADS" ;;
        tls)
            # nochg over https on keep-alive connections: TLS records only.
            echo "## tls (nochg over https, keep-alive)"
            measured tls run_wrk nochg "$THREADS" "$DURATION" "$https_url" ;;
        fresh|fresh_tls)
            # nochg on a new connection per request, as most routers
            # update (curl, wget, inadyn): TCP set-up and tear-down, and
            # for fresh_tls a full TLS 1.3 handshake (ECDSA P-256), each.
            echo "## $mode (nochg, a new connection per request)"
            target=$url
            [ "$mode" = fresh_tls ] && target=$https_url
            CLOSE=1 measured "$mode" run_wrk nochg "$THREADS" "$DURATION" "$target" ;;
        flood)
            # Good clients during a flood of wrong passwords (argon2 capped
            # at max_verifications): cached credentials never wait for argon2.
            echo "## nochg while a second wrk floods wrong passwords"
            run_wrk wrong 1 $((DURATION + 2)) > "$work/flood.txt" &
            flood=$!
            sleep 1
            run_wrk nochg "$THREADS" | grep -E '^(answers|latency)'
            wait $flood
            sed -n 's/^answers/flood answers/p' "$work/flood.txt" ;;
        served)
            echo "## good -> served"
            python3 bench/updater/served_delay.py "$http_port" "$dns_port" "$auth" "$HOSTS" "$SAMPLES" ;;
        statements)
            [ "$DB" = mariadb ] || { echo "MODES=statements needs DB=mariadb" >&2; exit 2; }
            counters() {
                mariadb -h127.0.0.1 -uroot -N -e "SHOW GLOBAL STATUS WHERE Variable_name IN
                    ('Questions', 'Com_stmt_execute', 'Com_stmt_prepare', 'Com_admin_commands',
                     'Com_select', 'Com_insert', 'Com_update', 'Com_delete', 'Com_begin', 'Com_commit')"
            }
            for kind in nochg change wrong; do
                counters > "$work/before"
                start=$(date +%s.%N)
                for i in $(seq 1 "${N:-200}"); do
                    case $kind in
                        nochg) ip=192.0.2.1 secret=$SECRET ;;
                        change) ip=10.1.$((i / 250)).$((i % 250)) secret=$SECRET ;;
                        wrong) ip=192.0.2.1 secret=wrong ;;
                    esac
                    curl -s -o /dev/null -u "bench:$secret" "$url/nic/update?hostname=h1.$ZONE&myip=$ip"
                done
                end=$(date +%s.%N)
                counters > "$work/after"
                echo "## statements: ${N:-200} updates ($kind) of one host, one at a time, in $(echo "$end - $start" | bc) s"
                join "$work/before" "$work/after" |
                    awk -v n="${N:-200}" '{printf "%-20s %6.2f per update\n", $1, ($3 - $2) / n}'
                # Put h1 back where the other modes expect it.
                curl -s -o /dev/null -u "bench:$SECRET" "$url/nic/update?hostname=h1.$ZONE&myip=192.0.2.1"
            done ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
done
curl -s "$url/metrics" | grep -E '^ddserver_updater_(commit_batches|argon2|auth_cache|mirror)' || true
echo "server log: $(grep -c -E 'ERROR|WARN' "$work/serve.log" || true) warnings/errors"
grep -E 'ERROR|WARN' "$work/serve.log" | head -5 || true
