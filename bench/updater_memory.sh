#!/usr/bin/env bash
# Resident memory of the updater's host mirror: `ddserver serve` on SQLite
# with HOSTS hosts (default 1M, inserted in SQL with h1's secret hash),
# started twice, with `updater.host_mirror_max` above HOSTS and with 0 (no
# mirror); VmRSS of each once the responder and the mirror have loaded.
# The difference is the mirror.
#
#   cargo build --release --bin ddserver
#   bench/updater_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ddserver}
HOSTS=${HOSTS:-1000000}
ZONE=dyn.example.net
command -v sqlite3 >/dev/null || { echo "bench/updater_memory.sh: sqlite3 is missing" >&2; exit 1; }
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for max in $((HOSTS * 2)) 0; do
    cat > "$work/dd.toml" <<TOML
[updater]
listen = ["127.0.0.1:$(port)"]
host_mirror_max = $max
[database]
url = "sqlite://$work/dd.db"
[responder]
listen = ["127.0.0.1:$(port)"]
workers = 1
control_socket = "$work/r.sock"
[log]
filter = "info"
TOML
    dd() { "$BIN" --config "$work/dd.toml" "$@"; }
    if [ ! -f "$work/dd.db" ]; then
        dd zone add $ZONE --ns ns1.example.net >/dev/null
        echo benchpw1 | dd user add bench --email b@example.org --max-hosts 100000000 --password-stdin >/dev/null
        echo bench-secret | dd host add h1.$ZONE --user bench --password-stdin >/dev/null
        sqlite3 "$work/dd.db" "INSERT INTO hosts (zone_id, label, fqdn, user_id, secret_hash, ipv4, created_at, updated_at)
            SELECT h.zone_id, 'h' || c.n, 'h' || c.n || '.$ZONE', h.user_id, h.secret_hash, '192.0.2.1', 0, 0
            FROM hosts h, (WITH RECURSIVE c(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM c WHERE n < $HOSTS) SELECT n FROM c) c
            WHERE h.fqdn = 'h1.$ZONE'"
    fi
    "$BIN" --config "$work/dd.toml" serve > "$work/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 1200); do
        if grep -q "loaded from the database" "$work/serve.log" &&
            { [ "$max" -eq 0 ] || grep -q "host mirror loaded" "$work/serve.log"; }; then
            break
        fi
        sleep 0.5
    done
    sleep 5 # let the load's garbage be returned
    echo "host_mirror_max=$max: $(grep VmRSS /proc/$pid/status | tr -s ' \t' ' ')"
    kill "$pid"
    wait "$pid" || true
    pid=
done
