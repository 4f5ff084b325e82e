# ddserver's responder, for ../shared/bench/run_peers.sh (see bench/README.md).
#
#   NICE=-10 DDSERVER=$PWD/target/release/ddserver \
#     ../shared/bench/run_peers.sh limit nsd knot $PWD/bench/servers/ddserver.sh
#
# The responder serves from its database, so the zone file is imported once
# into a SQLite database kept in $DDSERVER_DB_CACHE (default
# /tmp/dnsbench/ddserver-db), keyed by the zone file's size and time; each
# start copies that database and runs `ddserver responder` on it. The load
# time the harness reports is then: copy + open + load every name from the
# database + open the sockets. The one-time import is timed on its own in
# $DDSERVER_DB_CACHE/import-times.txt (see bench/README.md).
#
# DDSERVER_IO selects the I/O backend: auto (default), io-uring or portable.
PORT=${DDSERVER_PORT:-5306}
srv_start() {
	local cache=${DDSERVER_DB_CACHE:-/tmp/dnsbench/ddserver-db}
	local key db
	key=$(stat -c '%s-%Y' "$ZONE_FILE")
	db=$cache/$(basename "$ZONE_FILE").$key.db
	mkdir -p "$cache"
	if [ ! -f "$db" ]; then
		local t0 t1
		t0=$(date +%s.%N)
		DDSERVER_DATABASE_URL="sqlite://$db.tmp" "${DDSERVER:?set DDSERVER to the ddserver binary}" \
			zone import "$ZONE_FILE" >/dev/null || exit 1
		mv "$db.tmp" "$db"
		t1=$(date +%s.%N)
		echo "$(date -Is) $ZONE_FILE import $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s" >> "$cache/import-times.txt"
	fi
	# A cache made by an older binary may lack later migrations: apply them
	# to the cache once (a no-op when current), not to every start's copy,
	# so the load time measured is the load alone.
	DDSERVER_DATABASE_URL="sqlite://$db" "$DDSERVER" migrate >/dev/null || exit 1
	cp "$db" "$RUNDIR/dd.db"
	cat >"$RUNDIR/ddserver.toml" <<EOF2
[database]
url = "sqlite://$RUNDIR/dd.db"
[responder]
listen = ["127.0.0.1:$PORT"]
workers = $THREADS
io = "${DDSERVER_IO:-auto}"
control_socket = "$RUNDIR/responder.sock"
EOF2
	exec "$DDSERVER" --config "$RUNDIR/ddserver.toml" responder
}
