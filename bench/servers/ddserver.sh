# ddserver's responder, for ../shared/bench/run_peers.sh (see bench/README.md).
# The zone is imported into a fresh SQLite database, then the responder runs
# alone and loads it from there, so the load time counted by the harness
# includes the import and the load from the database.
#   NICE=-10 DDSERVER=$PWD/target/release/ddserver \
#     ../shared/bench/run_peers.sh limit nsd knot $PWD/bench/servers/ddserver.sh
# DDSERVER_IO selects the I/O backend: auto (default), io-uring or portable.
PORT=${DDSERVER_PORT:-5306}
srv_start() {
	cat >"$RUNDIR/ddserver.toml" <<EOF2
[database]
url = "sqlite://$RUNDIR/dd.db"
[responder]
listen = ["127.0.0.1:$PORT"]
workers = $THREADS
io = "${DDSERVER_IO:-auto}"
control_socket = "$RUNDIR/responder.sock"
EOF2
	"${DDSERVER:?set DDSERVER to the ddserver binary}" --config "$RUNDIR/ddserver.toml" zone import "$ZONE_FILE" >/dev/null || exit 1
	exec "$DDSERVER" --config "$RUNDIR/ddserver.toml" responder
}
