# bench/lib/measure.sh: one measurement = one bounded load run against one
# server, with the server's CPU time (utime+stime of all its processes, from
# /proc/PID/stat) read just before and just after. Each becomes one JSON
# line of $OUT/results.jsonl (bench_report record KIND: the tool's output
# is read there, not here); bench_report run makes the tables and plots.

# bound DURATION: whole seconds a run of DURATION (10, 10s, 500ms, 2m) may take
# before `timeout` ends it: the duration plus 30 s for connecting and reporting.
bound() {
    awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60
                           printf "%d", n + 31 }'
}

# Closed-loop afcgi-bench arguments for a shape "CxM" (C connections x M multiplexed).
shape_args() { printf '%s\n' -c "${1%x*}" -m "${1#*x}"; }

# The route, body and expected answer of each FastCGI workload.
workload_args() {
    case $1 in
    hello) printf '%s\n' /hello --expect-body 'Hello, world!' ;;
    json) printf '%s\n' /json --expect-body '"items":[' ;;
    upload) printf '%s\n' /upload -b 1m --expect-body 'length 1048576' ;;
    *) die "unknown workload $1" ;;
    esac
}

# bench_fcgi WORKLOAD SHAPE SERVER REP DURATION: one afcgi-bench run, straight to
# the server's FastCGI port; a "direct" record (req/s, p50, p99, errors, CPU
# per valid answer).
bench_fcgi() {
    local workload=$1 shape=$2 server=$3 rep=$4 dur=$5 json="$BENCH_TMP/last.json"
    local -a wl shp route
    local t0 t1
    mapfile -t wl < <(workload_args "$workload")
    mapfile -t shp < <(shape_args "$shape")
    mapfile -t route < <(fcgi_route_args "$server" "${wl[0]}")
    t0=$(server_ticks "$server")
    logged timeout "$(bound "$dur")" "$AFCGI_BENCH" --json -d "$dur" --timeout 2s "${shp[@]}" \
        "${route[@]}" "${wl[@]:1}" "127.0.0.1:${PORT[$server]}" >"$json" 2>"$BENCH_TMP/last.err"
    t1=$(server_ticks "$server")
    bench_report record direct "$OUT/results.jsonl" workload="$workload" shape="$shape" \
        server="$server" rep="$rep" ticks=$(( t1 - t0 )) hz="$CLK_TCK" bench="$json" \
        err="$BENCH_TMP/last.err"
}

# A warm-up run (not recorded): the same load for DURATION.
warm_fcgi() {
    local workload=$1 shape=$2 server=$3 dur=$4
    local -a wl shp route
    mapfile -t wl < <(workload_args "$workload")
    mapfile -t shp < <(shape_args "$shape")
    mapfile -t route < <(fcgi_route_args "$server" "${wl[0]}")
    timeout "$(bound "$dur")" "$AFCGI_BENCH" --json -d "$dur" --timeout 2s "${shp[@]}" \
        "${route[@]}" "${wl[@]:1}" "127.0.0.1:${PORT[$server]}" >/dev/null 2>&1
    return 0
}

# bench_http CONC SERVER REP DURATION: one wrk run through HTTP port
# NGINX_PORT[SERVER]; CPU of the FastCGI server behind nginx and of nginx
# itself (for nginx-lua both are nginx). An "http" record.
bench_http() {
    local conc=$1 server=$2 rep=$3 dur=$4 out="$BENCH_TMP/wrk.out"
    local front=nginx backend=$2 threads=2 b0= b1= n0 n1
    [ "$server" = nginx-lua ] && front=nginx-lua backend=
    [ "$conc" -lt 2 ] && threads=1
    [ -n "$backend" ] && b0=$(server_ticks "$backend")
    n0=$(server_ticks "$front")
    logged timeout "$(bound "$dur")" wrk -t "$threads" -c "$conc" -d "$dur" --timeout 2s --latency \
        "http://127.0.0.1:${NGINX_PORT[$server]}/hello" >"$out" 2>&1
    n1=$(server_ticks "$front")
    [ -n "$backend" ] && b1=$(server_ticks "$backend")
    bench_report record http "$OUT/results.jsonl" conc="$conc" server="$server" rep="$rep" \
        backend_ticks="${backend:+$(( b1 - b0 ))}" nginx_ticks=$(( n1 - n0 )) hz="$CLK_TCK" wrk="$out"
}

warm_http() {
    timeout 30 wrk -t 2 -c "$1" -d "$3" "http://127.0.0.1:${NGINX_PORT[$2]}/hello" >/dev/null 2>&1
    return 0
}

# hold_test SERVER N CONNS DURATION: N long-poll requests (/sleep?ms=10000)
# held open with afcgi-bench --hold; RSS and PSS of the server's processes
# before (after a warm-up), and once they stop growing while the requests
# wait. A "hold" record (held, memory before and while, growth per request).
hold_test() {
    local server=$1 n=$2 conns=$3 dur=$4 out="$BENCH_TMP/hold.out" json="$BENCH_TMP/hold.json"
    local -a route
    local m0 m1 prev bpid deadline r0 r1 p0 p1 np
    mapfile -t route < <(fcgi_route_args "$server" "/sleep?ms=0")
    # every server first answers 2,000 requests of the same route without the
    # wait, so that lazy start-up (php-fpm's children, pools) is not counted
    timeout 60 "$AFCGI_BENCH" --json -c "$(( conns < 64 ? conns : 64 ))" -n 2000 "${route[@]}" \
        "127.0.0.1:${PORT[$server]}" >/dev/null 2>&1
    mapfile -t route < <(fcgi_route_args "$server" "/sleep?ms=10000")
    m0=$(server_mem "$server")
    logcmd "$AFCGI_BENCH" --json --hold "$n" -c "$conns" -d "$dur" --timeout 0 "${route[@]}" \
        --expect-body slept "127.0.0.1:${PORT[$server]}"
    : >"$json"
    "$AFCGI_BENCH" --json --hold "$n" -c "$conns" -d "$dur" --timeout 0 "${route[@]}" \
        --expect-body slept "127.0.0.1:${PORT[$server]}" >"$json" 2>"$out" &
    bpid=$!
    wait_line "$out" '^holding [0-9]+ requests' "${dur%s}" || say "  $server: not all $n requests written"
    # the requests are written; wait until the server's memory stops growing
    prev=0 deadline=$(( SECONDS + 8 ))
    while m1=$(server_mem "$server"); [ $SECONDS -lt $deadline ]; do
        awk -v a="${m1%% *}" -v b="$prev" 'BEGIN { exit !(a > 0 && a - b <= a / 200) }' && break
        prev=${m1%% *}
        sleep 0.25
    done
    kill -INT "$bpid" 2>/dev/null
    wait "$bpid" 2>/dev/null
    read -r r0 p0 _ <<<"$m0"
    read -r r1 p1 np <<<"$m1"
    bench_report record hold "$OUT/results.jsonl" server="$server" wanted="$n" conns="$conns" \
        rss0="$r0" rss="$r1" pss0="$p0" pss="$p1" nproc="$np" bench="$json"
}
