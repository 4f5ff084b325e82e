#!/usr/bin/env bash
# Counts what MariaDB runs per update: one client (curl) sends N updates of
# one host in a row through `ddserver serve`, and MariaDB's global status
# counters are read before and after (statements, pings, prepares).
# MODE: change (a new address each time, the default), nochg (the same
# address), wrong (a wrong password).
# The counters are server-wide: run it on a MariaDB server nothing else
# uses. The idle background polls of the N changes' duration are included.
#
#   cargo build --release --bin ddserver
#   bench/mariadb_statements.sh            # BIN, N (200), MODE, MYSQL_URL
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ddserver}
N=${N:-200}
MODE=${MODE:-change}
MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306}
[ -x "$BIN" ] || { echo "build $BIN first (cargo build --release --bin ddserver)" >&2; exit 1; }
work=$(mktemp -d)
database=ddcount_$$
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    mariadb -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $database" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
dns_port=$(free_port)
mariadb -h127.0.0.1 -uroot -e "CREATE DATABASE $database"
cat > "$work/ddserver.toml" <<TOML
[updater]
listen = ["127.0.0.1:$http_port"]
changes_per_host = 100000
changes_refill = 1
failed_auth_per_address = 100000
failed_auth_per_host = 100000
failed_auth_refill = 1

[database]
url = "$MYSQL_URL/$database"

[responder]
listen = ["127.0.0.1:$dns_port"]
workers = 1
control_socket = "$work/responder.sock"

[log]
filter = "warn"
TOML
dd() { "$BIN" --config "$work/ddserver.toml" "$@"; }
dd zone add dyn.example.net --ns ns1.example.net >/dev/null
echo benchpw | dd user add bench --email bench@example.org --password-stdin >/dev/null
echo bench-secret | dd host add h1.dyn.example.net --user bench --password-stdin >/dev/null
"$BIN" --config "$work/ddserver.toml" serve > "$work/serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$http_port"
for _ in $(seq 1 300); do
    curl -s -o /dev/null "$url/healthz" && break
    sleep 0.1
done
update() { # ADDRESS [SECRET]
    curl -s -o /dev/null -u "bench:${2:-bench-secret}" "$url/nic/update?hostname=h1.dyn.example.net&myip=$1"
}
# The first update verifies the credentials (argon2) and warms the caches.
update 10.0.0.1
sleep 1.5
counters() {
    mariadb -h127.0.0.1 -uroot -N -e "SHOW GLOBAL STATUS WHERE Variable_name IN
        ('Questions', 'Com_stmt_execute', 'Com_stmt_prepare', 'Com_admin_commands',
         'Com_select', 'Com_insert', 'Com_update', 'Com_delete', 'Com_begin', 'Com_commit')"
}
counters > "$work/before"
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do
    case $MODE in
        change) update "10.1.$((i / 250)).$((i % 250))" ;;
        nochg) update 10.0.0.1 ;;
        wrong) update 10.0.0.1 wrong-secret ;;
        *) echo "MODE must be change, nochg or wrong" >&2; exit 2 ;;
    esac
done
end=$(date +%s.%N)
counters > "$work/after"
echo "# $N updates ($MODE) of one host, one at a time, in $(echo "$end - $start" | bc) s"
join "$work/before" "$work/after" | awk -v n="$N" '{printf "%-20s %6.2f per update\n", $1, ($3 - $2) / n}'
