#!/bin/bash
# examples/demo.sh: serves examples/index.lua through a real nginx (or
# HAProxy), in the foreground, until Ctrl-C (or SIGTERM). `make demo` builds
# ./afcgi and runs it.
#
#     examples/demo.sh              # http://127.0.0.1:8080/
#     PORT=8081 examples/demo.sh
#     FRONT=haproxy examples/demo.sh    # HAProxy with examples/haproxy.cfg:
#                                       # many requests per FastCGI connection
#
# afcgi listens on a free loopback port; nginx runs from its own generated
# config in a temporary directory (config, pid, logs and temp files there),
# never as the system service, and talks to afcgi over kept-alive FastCGI
# connections (upstream keepalive + fastcgi_keep_conn on, as in
# examples/nginx.conf). On exit both are stopped by PID and the directory is
# removed.
#
# With FRONT=haproxy, HAProxy runs examples/haproxy.cfg itself, only its bind
# and server addresses replaced, instead of nginx.
#
# Environment: PORT (default 8080), FRONT (nginx or haproxy; default nginx),
# AFCGI (default ./afcgi of this checkout), NGINX (default nginx from PATH or
# /usr/sbin/nginx), HAPROXY (default haproxy from PATH or /usr/sbin/haproxy),
# TMPDIR.
# shellcheck disable=SC2317  # (functions called from traps and wait_for)
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${PORT:-8080}
AFCGI=${AFCGI:-$ROOT/afcgi}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
FRONT=${FRONT:-nginx}
START_TIMEOUT=10        # seconds each of afcgi and nginx get to become ready
STOP_TIMEOUT=10         # seconds each gets to exit on SIGTERM before SIGKILL

die() { echo "demo: $*" >&2; exit 1; }

case $PORT in ''|*[!0-9]*) die "PORT must be a number, got '$PORT'" ;; esac
[ -x "$AFCGI" ] || die "$AFCGI is not built: run make afcgi (or make demo)"
case $FRONT in
    nginx) [ -x "$NGINX" ] || die "nginx not found: run make deps (or set NGINX=/path/to/nginx)" ;;
    haproxy) [ -x "$HAPROXY" ] || die "haproxy not found: run make deps (or set HAPROXY=...)" ;;
    *) die "FRONT must be nginx or haproxy, got '$FRONT'" ;;
esac

RUN=$(mktemp -d "${TMPDIR:-/tmp}/afcgi-demo.XXXXXX") || die "cannot create a temp dir"
chmod 755 "$RUN"        # nginx workers (user nobody when run as root) must reach it
AFCGI_PID='' FRONT_PID=''

# Sends SIGTERM to pid and waits (bounded) for it to exit; SIGKILL after
# STOP_TIMEOUT. Both processes are this shell's children, so bash reaps them
# and kill -0 fails once they are gone.
stop_pid() {
    local pid=$1 name=$2 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "demo: $name (pid $pid) did not stop within ${STOP_TIMEOUT}s, killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    trap '' INT TERM HUP      # a second Ctrl-C must not cut the (bounded) cleanup short
    trap - EXIT
    echo "demo: stopping"
    stop_pid "$FRONT_PID" "$FRONT"   # first: no new requests reach afcgi
    stop_pid "$AFCGI_PID" afcgi
    rm -rf "$RUN"
}
# Ctrl-C, SIGTERM or a closed terminal is how the demo is meant to end:
# like afcgi on SIGTERM/SIGINT, stop cleanly and exit 0.
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

show_logs() {
    echo "--- afcgi log:" >&2; tail -n 20 "$RUN/afcgi.log" >&2 2>/dev/null
    echo "--- $FRONT log:" >&2; tail -n 20 "$RUN/error.log" >&2 2>/dev/null
}

# Polls "$@" every 50 ms until it succeeds; fails after START_TIMEOUT seconds
# or as soon as process $pid has exited.
wait_for() {
    local pid=$1 what=$2 deadline=$((SECONDS + START_TIMEOUT))
    shift 2
    while ((SECONDS < deadline)); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || { show_logs; die "$what exited during start-up"; }
        sleep 0.05
    done
    show_logs
    die "$what not ready within ${START_TIMEOUT}s"
}

# Both run in their own sessions (setsid: no fork here, so $! is their PID):
# Ctrl-C reaches only this script, whose trap stops them in order.
#
# afcgi: port 0 picks a free port; the readiness line says which.
setsid "$AFCGI" --listen 127.0.0.1:0 --shutdown-timeout 5 "$ROOT/examples/index.lua" \
    2>"$RUN/afcgi.log" &
AFCGI_PID=$!
afcgi_ready() { grep -q 'ready, listening on ' "$RUN/afcgi.log"; }
wait_for "$AFCGI_PID" afcgi afcgi_ready
UPSTREAM=$(sed -n 's/.*ready, listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$RUN/afcgi.log")
[ -n "$UPSTREAM" ] || die "no address in afcgi's readiness line: $(cat "$RUN/afcgi.log")"

if [ "$FRONT" = haproxy ]; then
    # examples/haproxy.cfg itself, with the demo's port and afcgi's address
    sed -e "s/^\( *bind \)127\.0\.0\.1:8081\$/\1127.0.0.1:$PORT/" \
        -e "s/^\( *server afcgi1 \)127\.0\.0\.1:9000 proto fcgi\$/\1$UPSTREAM proto fcgi/" \
        "$ROOT/examples/haproxy.cfg" >"$RUN/haproxy.cfg"
    grep -q "bind 127.0.0.1:$PORT\$" "$RUN/haproxy.cfg" && grep -q "server afcgi1 $UPSTREAM " "$RUN/haproxy.cfg" ||
        die "examples/haproxy.cfg no longer has its bind/server lines: update demo.sh"
    setsid "$HAPROXY" -db -f "$RUN/haproxy.cfg" >"$RUN/error.log" 2>&1 &
    FRONT_PID=$!
else
USER_LINE=                      # as root, nginx workers run as nobody
if [ "$(id -u)" = 0 ]; then
    USER_LINE="user nobody;"
    getent group nogroup >/dev/null && USER_LINE="user nobody nogroup;"
fi
cat >"$RUN/nginx.conf" <<EOF
# Generated by examples/demo.sh; removed when the demo stops.
$USER_LINE
worker_processes 2;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/error.log notice;
events { worker_connections 1024; }
http {
    access_log $RUN/access.log;
    client_body_temp_path $RUN/client_body;
    fastcgi_temp_path $RUN/fastcgi_temp;
    proxy_temp_path $RUN/proxy_temp;
    scgi_temp_path $RUN/scgi_temp;
    uwsgi_temp_path $RUN/uwsgi_temp;

    upstream afcgi {
        server $UPSTREAM;
        keepalive 16;
        keepalive_requests 10000;
    }
    server {
        listen 127.0.0.1:$PORT;
        server_name localhost;
        client_max_body_size 8m;
        location / {
            fastcgi_param QUERY_STRING      \$query_string;
            fastcgi_param REQUEST_METHOD    \$request_method;
            fastcgi_param CONTENT_TYPE      \$content_type;
            fastcgi_param CONTENT_LENGTH    \$content_length;
            fastcgi_param SCRIPT_NAME       \$fastcgi_script_name;
            fastcgi_param REQUEST_URI       \$request_uri;
            fastcgi_param DOCUMENT_URI      \$document_uri;
            fastcgi_param SERVER_PROTOCOL   \$server_protocol;
            fastcgi_param REQUEST_SCHEME    \$scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE   nginx/\$nginx_version;
            fastcgi_param REMOTE_ADDR       \$remote_addr;
            fastcgi_param REMOTE_PORT       \$remote_port;
            fastcgi_param SERVER_ADDR       \$server_addr;
            fastcgi_param SERVER_PORT       \$server_port;
            fastcgi_param SERVER_NAME       \$server_name;
            fastcgi_param HTTP_HOST         \$host;
            fastcgi_pass afcgi;
            fastcgi_keep_conn on;
        }
    }
}
EOF

setsid "$NGINX" -p "$RUN/" -c "$RUN/nginx.conf" -e "$RUN/error.log" 2>"$RUN/nginx.stderr" &
FRONT_PID=$!

fi

# Ready once a request goes all the way through the front to afcgi and back.
hello_through_front() {
    # shellcheck disable=SC2016  # $1 and $status belong to the inner bash
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /hello HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        IFS= read -r status <&3 && [[ $status == "HTTP/1."?" 200 "* ]]' _ "$PORT" 2>/dev/null
}
wait_for "$FRONT_PID" "$FRONT on 127.0.0.1:$PORT" hello_through_front

cat <<EOF
afcgi (pid $AFCGI_PID) on $UPSTREAM serving examples/index.lua
$FRONT (pid $FRONT_PID) in front of it, logs in $RUN

    open http://127.0.0.1:$PORT/

Ctrl-C stops both.
EOF

# Returns when a signal arrives (its trap exits, the EXIT trap cleans up) or
# when either process exits on its own.
wait -n "$AFCGI_PID" "$FRONT_PID"
show_logs
die "afcgi or $FRONT exited unexpectedly"
