#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for CI's test runs:
#   eval "$(bash scripts/postgres.sh start DIR)"   # exports STEPWELL_TEST_POSTGRES
#   bash scripts/postgres.sh stop DIR
# initdb in DIR (trust auth, 127.0.0.1 only), run as the postgres user when
# called as root: the server refuses to run as root.
set -euo pipefail
action=$1
dir=$2
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_server() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$action" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" != 0 ] || chown postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_server "$bin/initdb" -D "$dir/data" -U stepwell --auth=trust -E UTF8 --no-sync >"$dir/initdb.log"
    as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-k $dir -h 127.0.0.1 -p $port -c max_connections=300" start >/dev/null
    echo "export STEPWELL_TEST_POSTGRES=postgresql://stepwell@127.0.0.1:$port/postgres"
    ;;
stop)
    as_server "$bin/pg_ctl" -D "$dir/data" -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres.sh start|stop DIR" >&2
    exit 2
    ;;
esac
