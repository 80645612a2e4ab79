# bench/lib/measure.sh: one measurement = one bounded load run against one
# server, with the server's CPU time (utime+stime of all its processes, from
# /proc/PID/stat) read just before and just after. Each appends one line to a
# TSV file in $OUT; bench/lib/report.sh turns those into tables and plots.

# bound DURATION: whole seconds a run of DURATION (10, 10s, 500ms, 2m) may take
# before `timeout` ends it: the duration plus 30 s for connecting and reporting.
bound() {
    awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60
                           printf "%d", n + 31 }'
}

# json_num FILE KEY: the first number after "KEY": in FILE.
json_num() { grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -1 | cut -d: -f2; }

# The error kinds of an afcgi-bench --json result that are not 0: "read=3,body=2" or "-".
json_errors() {
    grep -o '"errors":{[^}]*}' "$1" | grep -o '"[a-z]*":[0-9]*' | tr -d '"' |
        awk -F: '$2 > 0 { s = s (s ? "," : "") $1 "=" $2 } END { print s ? s : "-" }'
}

# cpu_us TICKS REQUESTS: microseconds of CPU per request.
cpu_us() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (n > 0 ? t / hz / n * 1e6 : 0) }'; }

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
# the server's FastCGI port; appends to $OUT/direct.tsv:
#   workload shape server rep ok_per_s p50_ms p99_ms ok failed errors cpu_us_per_ok
bench_fcgi() {
    local workload=$1 shape=$2 server=$3 rep=$4 dur=$5 json="$BENCH_TMP/last.json"
    local -a wl shp route
    local t0 t1 ok dur_s
    mapfile -t wl < <(workload_args "$workload")
    mapfile -t shp < <(shape_args "$shape")
    mapfile -t route < <(fcgi_route_args "$server" "${wl[0]}")
    t0=$(server_ticks "$server")
    logged timeout "$(bound "$dur")" "$AFCGI_BENCH" --json -d "$dur" --timeout 2s "${shp[@]}" \
        "${route[@]}" "${wl[@]:1}" "127.0.0.1:${PORT[$server]}" >"$json" 2>"$BENCH_TMP/last.err"
    t1=$(server_ticks "$server")
    if ! grep -q '"rps"' "$json"; then
        say "  $workload $shape $server: afcgi-bench gave no result: $(head -c 300 "$BENCH_TMP/last.err")"
        printf '%s\t%s\t%s\t%s\t0\t-\t-\t0\t0\tno-result\t-\n' "$workload" "$shape" "$server" "$rep" \
            >>"$OUT/direct.tsv"
        return
    fi
    ok=$(json_num "$json" ok); dur_s=$(json_num "$json" duration_s)
    printf '%s\t%s\t%s\t%s\t%.0f\t%.3f\t%.3f\t%s\t%s\t%s\t%s\n' "$workload" "$shape" "$server" "$rep" \
        "$(awk -v n="$ok" -v d="$dur_s" 'BEGIN { print (d > 0 ? n / d : 0) }')" \
        "$(awk -v v="$(json_num "$json" p50)" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="$(json_num "$json" p99)" 'BEGIN { print v / 1000 }')" \
        "$ok" "$(json_num "$json" failed)" "$(json_errors "$json")" \
        "$(cpu_us $(( t1 - t0 )) "$ok")" | tee -a "$OUT/direct.tsv" | progress_line
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

# wrk_ms VALUE: wrk's latency ("812.00us", "1.23ms", "2.01s") in milliseconds.
wrk_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; print n }'
}

# bench_http CONC SERVER REP DURATION FILE: one wrk run through HTTP port
# NGINX_PORT[SERVER]; CPU of the FastCGI server behind nginx and of nginx
# itself (for nginx-lua both are nginx). Appends to FILE:
#   conc server rep ok_per_s p50_ms p99_ms requests non2xx errors backend_cpu_us nginx_cpu_us
bench_http() {
    local conc=$1 server=$2 rep=$3 dur=$4 file=$5 out="$BENCH_TMP/wrk.out"
    local front=nginx backend=$2 threads=2 b0 b1 n0 n1 reqs non2xx errs rps
    [ "$server" = nginx-lua ] && front=nginx-lua backend=
    [ "$conc" -lt 2 ] && threads=1
    b0=0 b1=0
    [ -n "$backend" ] && b0=$(server_ticks "$backend")
    n0=$(server_ticks "$front")
    logged timeout "$(bound "$dur")" wrk -t "$threads" -c "$conc" -d "$dur" --timeout 2s --latency \
        "http://127.0.0.1:${NGINX_PORT[$server]}/hello" >"$out" 2>&1
    n1=$(server_ticks "$front")
    [ -n "$backend" ] && b1=$(server_ticks "$backend")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$out")
    errs=$(awk -F'errors: ' '/Socket errors/ { n = split($2, kv, ", ")
        for (i = 1; i <= n; i++) { split(kv[i], p, " "); if (p[2] > 0) e = e (e ? "," : "") p[1] "=" p[2] }
        print e }' "$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$out")
    reqs=${reqs:-0} non2xx=${non2xx:-0}
    # good answers per second: wrk's rate less its share of non-2xx answers
    rps=$(awk -v r="${rps:-0}" -v n="$reqs" -v b="$non2xx" 'BEGIN { printf "%.0f", (n > 0 ? r * (n - b) / n : 0) }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$conc" "$server" "$rep" "$rps" \
        "$(wrk_ms "$(awk '$1 == "50%" { print $2 }' "$out")")" \
        "$(wrk_ms "$(awk '$1 == "99%" { print $2 }' "$out")")" \
        "$reqs" "$non2xx" "${errs:--}" \
        "$( [ -n "$backend" ] && cpu_us $(( b1 - b0 )) "$reqs" || echo -)" \
        "$(cpu_us $(( n1 - n0 )) "$reqs")" | tee -a "$file" | progress_line
}

warm_http() {
    timeout 30 wrk -t 2 -c "$1" -d "$3" "http://127.0.0.1:${NGINX_PORT[$2]}/hello" >/dev/null 2>&1
    return 0
}

# Prints the measurement lines as they come, unless --quiet.
progress_line() {
    if [ -n "${QUIET:-}" ]; then cat >/dev/null; else sed 's/^/  /; s/\t/  /g' >&2; fi
}

# hold_test SERVER N CONNS DURATION: N long-poll requests (/sleep?ms=10000)
# held open with afcgi-bench --hold; RSS and PSS of the server's processes
# before (after a warm-up), and once they stop growing while the requests wait. Appends to
# $OUT/hold.tsv:
#   server wanted held conns rss0_kb rss_kb pss0_kb pss_kb nproc
#   rss_growth_per_held_b pss_growth_per_held_b rss_total_per_held_b errors
hold_test() {
    local server=$1 n=$2 conns=$3 dur=$4 out="$BENCH_TMP/hold.out" json="$BENCH_TMP/hold.json"
    local -a route
    local m0 m1 prev held bpid deadline r0 r1 p0 p1 np
    mapfile -t route < <(fcgi_route_args "$server" "/sleep?ms=0")
    # every server first answers 2,000 requests of the same route without the
    # wait, so that lazy start-up (php-fpm's children, pools) is not counted
    timeout 60 "$AFCGI_BENCH" --json -c "$(( conns < 64 ? conns : 64 ))" -n 2000 "${route[@]}" \
        "127.0.0.1:${PORT[$server]}" >/dev/null 2>&1
    mapfile -t route < <(fcgi_route_args "$server" "/sleep?ms=10000")
    m0=$(server_mem "$server")
    logcmd "$AFCGI_BENCH" --json --hold "$n" -c "$conns" -d "$dur" --timeout 0 "${route[@]}" \
        --expect-body slept "127.0.0.1:${PORT[$server]}"
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
    held=$(json_num "$json" held)
    held=${held:-0}
    read -r r0 p0 _ <<<"$m0"
    read -r r1 p1 np <<<"$m1"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$n" "$held" "$conns" \
        "$r0" "$r1" "$p0" "$p1" "$np" \
        $(awk -v a="$r0" -v b="$r1" -v c="$p0" -v d="$p1" -v n="$held" 'BEGIN {
            if (n == 0) print "- - -"
            else printf "%.0f %.0f %.0f", (b - a) * 1024 / n, (d - c) * 1024 / n, b * 1024 / n }') \
        "$( [ -s "$json" ] && json_errors "$json" || echo no-result)" | tee -a "$OUT/hold.tsv" | progress_line
}
