# bench/lib/servers.sh: start each server on 127.0.0.1 with its own
# configuration and wait (bounded) until it is ready. Each start_* sets
# PORT[name]; the servers are stopped by bench/lib/common.sh (server_stop).
#
#   afcgi    ./afcgi --listen 127.0.0.1:0 APP (one process); ready = its readiness
#            line (start_afcgi, bench/lib/common.sh: the one for every harness)
#   php      php-fpm8.2 -F, pm = static, 64 children (bench/peers/php/php-fpm.conf)
#   go       net/http/fcgi (bench/peers/go/main.go), built here with go build, offline
#   c        libfcgi responder (bench/peers/libfcgi/responder.c), spawn-fcgi -F 64
#   wsapi    WSAPI (wsapi.fastcgi, lfcgi on libfcgi) under luajit, spawn-fcgi -F 64
#   nginx    the front: one server block per FastCGI server, upstream keepalive
#   nginx-lua  nginx + lua-nginx-module answering hello in-process (the ceiling)

PEER_PROCS=64                   # php-fpm children, spawn-fcgi forks

# Compiles the Go and C peers into $BENCH_TMP (no downloads: GOPROXY=off,
# GOPATH and GOCACHE in the scratch directory, standard library only).
build_peers() {
    say "building the Go and C peers"
    ( cd "$BENCH_DIR/peers/go" &&
      GOPATH="$BENCH_TMP/gopath" GOCACHE="$BENCH_TMP/gocache" GOPROXY=off GOFLAGS= \
      GO111MODULE=off GOTOOLCHAIN=local go build -o "$BENCH_TMP/go-fcgi" main.go ) ||
        die "go build failed"
    cc -O2 -Wall -Wextra -o "$BENCH_TMP/c-fcgi" "$BENCH_DIR/peers/libfcgi/responder.c" -lfcgi ||
        die "cc responder.c failed"
}

# Waits until server $1 has at least $2 processes (forked children), 20 s at most.
wait_procs() {
    local name=$1 want=$2 deadline=$(( SECONDS + 20 )) n
    while [ $SECONDS -lt $deadline ]; do
        n=$(session_pids "${SERVER_SID[$name]}" | wc -l)
        [ "$n" -ge "$want" ] && return 0
        sleep 0.05
    done
    cat "$BENCH_TMP/$name.log" >&2
    die "$name: $n of $want processes after 20 s"
}

start_php() {
    local port conf="$BENCH_TMP/php-fpm.conf"
    port=$(free_port)
    sed -e "s|@PORT@|$port|" -e "s|@PREFIX@|$BENCH_TMP|" -e "s|= 64$|= $PEER_PROCS|" \
        "$BENCH_DIR/peers/php/php-fpm.conf" >"$conf"
    server_start php "$BENCH_TMP/php.log" php-fpm8.2 -F -R -y "$conf"
    wait_port php "$port" || { cat "$BENCH_TMP/php.log" >&2; die "php-fpm did not start"; }
    wait_procs php $(( PEER_PROCS + 1 ))
    PORT[php]=$port
}

start_go() {
    local log="$BENCH_TMP/go.log"
    server_start go "$log" "$BENCH_TMP/go-fcgi" 0
    wait_line "$log" 'ready, listening on' 20 || { cat "$log" >&2; die "go peer did not start"; }
    PORT[go]=$(sed -n 's/.*ready, listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
}

# start_spawned NAME CMD...: CMD forked PEER_PROCS times by spawn-fcgi on a
# free port. spawn-fcgi exits once it has forked them, each child in a session
# of its own; the server's sessions are the child PIDs it reports.
start_spawned() {
    local name=$1 port log="$BENCH_TMP/$1.log" deadline; shift
    port=$(free_port)
    server_start "$name" "$log" \
        spawn-fcgi -a 127.0.0.1 -p "$port" -b 4096 -F "$PEER_PROCS" -- "$@"
    deadline=$(( SECONDS + 20 ))
    while kill -0 "${SERVER_LEADER[$name]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        sleep 0.05
    done
    SERVER_SID[$name]=$(sed -n 's/.*child spawned successfully: PID: \([0-9]*\).*/\1/p' "$log" | xargs)
    wait_procs "$name" "$PEER_PROCS"
    wait_port "$name" "$port" || { cat "$BENCH_TMP/$name.log" >&2; die "$name did not start"; }
    PORT[$name]=$port
}

start_c() { start_spawned c "$BENCH_TMP/c-fcgi"; }
start_wsapi() { start_spawned wsapi "$(command -v luajit)" "$BENCH_DIR/peers/wsapi/app.lua"; }

start_peer() {
    case $1 in
    afcgi) start_afcgi afcgi "$AFCGI_HELLO" ;;
    php) start_php ;;
    go) start_go ;;
    c) start_c ;;
    wsapi) start_wsapi ;;
    *) die "unknown peer $1" ;;
    esac
}

# The bench arguments that reach ROUTE on server NAME: php-fpm is told the
# script to run (SCRIPT_FILENAME), the others route on DOCUMENT_URI.
fcgi_route_args() {
    local name=$1 route=$2 path=${2%%\?*}
    printf '%s\n' -u "$route"
    [ "$name" = php ] && printf '%s\n' -P "SCRIPT_FILENAME=$BENCH_DIR/peers/php${path}.php"
    return 0
}

# nginx in front of the FastCGI servers listed in $@ (already started): one
# server block each on its own port, NGINX_PORT[name]. The config is written
# from bench/peers/nginx/front.conf.in; one upstream block per server.
declare -A NGINX_PORT=()
start_nginx_front() {
    local name servers="" prefix="$BENCH_TMP/nginx-front" port extra
    mkdir -p "$prefix/logs"
    for name in "$@"; do
        port=$(free_port)
        NGINX_PORT[$name]=$port
        extra=
        [ "$name" = php ] &&
            extra='fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name.php;'
        servers+=$(sed -e "s|@NAME@|$name|g" -e "s|@PORT@|$port|g" \
                       -e "s|@UPSTREAM@|127.0.0.1:${PORT[$name]}|g" \
                       -e "s|@PHPROOT@|$BENCH_DIR/peers/php|g" -e "s|@EXTRA@|$extra|" \
                       "$BENCH_DIR/peers/nginx/front-server.conf.in")$'\n'
    done
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@WORKERS@|$NGINX_WORKERS|" \
        "$BENCH_DIR/peers/nginx/nginx.conf.in" >"$prefix/nginx.conf"
    printf '%s' "$servers" >"$prefix/servers.conf"
    start_nginx nginx "$prefix" "${NGINX_PORT[$1]}"
}

# nginx answering hello itself with content_by_lua_block (lua-nginx-module).
start_nginx_lua() {
    local prefix="$BENCH_TMP/nginx-lua" port
    mkdir -p "$prefix/logs"
    port=$(free_port)
    NGINX_PORT[nginx-lua]=$port
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@WORKERS@|$NGINX_WORKERS|" \
        -e 's|^# *\(load_module.*\)|\1|' \
        "$BENCH_DIR/peers/nginx/nginx.conf.in" >"$prefix/nginx.conf"
    sed -e "s|@PORT@|$port|g" "$BENCH_DIR/peers/nginx/lua-server.conf.in" >"$prefix/servers.conf"
    start_nginx nginx-lua "$prefix" "$port"
}

start_nginx() {
    local name=$1 prefix=$2 port=$3
    nginx -t -q -p "$prefix/" -c "$prefix/nginx.conf" 2>"$prefix/test.log" ||
        { cat "$prefix/test.log" >&2; die "$name: bad config"; }
    server_start "$name" "$BENCH_TMP/$name.log" nginx -p "$prefix/" -c "$prefix/nginx.conf"
    wait_port "$name" "$port" || { cat "$BENCH_TMP/$name.log" "$prefix/logs/error.log" >&2; die "$name did not start"; }
    wait_procs "$name" $(( NGINX_WORKERS + 1 ))
}
