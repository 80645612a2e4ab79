# bench/lib/targets.sh: the two counts that do not depend on the machine's
# load: user-space instructions per request (callgrind) and system calls per
# request (strace -c), both on afcgi serving examples/hello.lua at 1x256.

# Total Ir of afcgi under callgrind after it served N requests (1x256) and
# shut down cleanly on SIGTERM (which is when callgrind writes its file).
callgrind_ir() {
    local n=$1 name=cg$1 out="$BENCH_TMP/callgrind.$1" log="$BENCH_TMP/cg$1.log" deadline
    server_start "$name" "$log" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$AFCGI" --listen 127.0.0.1:0 "$AFCGI_HELLO"
    wait_line "$log" 'ready, listening on' 60 || { cat "$log" >&2; die "afcgi under callgrind did not start"; }
    PORT[$name]=$(sed -n 's/.*ready, listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    logged timeout 300 "$AFCGI_BENCH" --json -c 1 -m 256 -n "$n" --timeout 30s \
        "127.0.0.1:${PORT[$name]}" >"$BENCH_TMP/$name.json" 2>&1
    kill -TERM "${SERVER_LEADER[$name]}"
    deadline=$(( SECONDS + 60 ))
    while kill -0 "${SERVER_LEADER[$name]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        sleep 0.1
    done
    server_stop "$name"
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

# instructions per request: the difference of two runs (N1 and N2 requests)
# over N2 - N1, so start-up, loading the app and shutdown cancel out.
target_instructions() {
    local n1=$1 n2=$2 ir1 ir2
    say "callgrind: afcgi hello at 1x256, $n1 and $n2 requests"
    ir1=$(callgrind_ir "$n1"); ir2=$(callgrind_ir "$n2")
    [ -n "$ir1" ] && [ -n "$ir2" ] || { say "  callgrind gave no totals"; return; }
    printf 'instructions\t%s\t%s\t%s\t%s\t%s\n' "$n1" "$ir1" "$n2" "$ir2" \
        "$(awk -v a="$ir1" -v b="$ir2" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')" |
        tee -a "$OUT/targets.tsv" | progress_line
}

# strace_calls SERVER SHAPE N: strace -c -f attached to every process of
# SERVER while afcgi-bench sends N hello requests in SHAPE (after a warm-up).
# Appends "syscalls SERVER SHAPE N calls calls_per_request" to targets.tsv and
# keeps strace's own table in $OUT/strace-SERVER-SHAPE.txt.
strace_calls() {
    local server=$1 shape=$2 n=$3 out="$OUT/strace-$1-$2.txt" log="$BENCH_TMP/strace.log"
    local -a shp route pargs=()
    local pid spid calls
    mapfile -t shp < <(shape_args "$shape")
    mapfile -t route < <(fcgi_route_args "$server" /hello)
    for pid in $(session_pids "${SERVER_SID[$server]}"); do pargs+=(-p "$pid"); done
    warm_fcgi hello "$shape" "$server" 1s
    logcmd strace -c -f -o "$out" "${pargs[@]}"
    strace -c -f -o "$out" "${pargs[@]}" 2>"$log" &
    spid=$!
    wait_line "$log" 'attached' 10 || say "  strace did not attach"
    # all processes attached: strace prints one line per process it attached
    wait_line_count "$log" attached $(( ${#pargs[@]} / 2 )) 10
    logged timeout 120 "$AFCGI_BENCH" --json "${shp[@]}" -n "$n" "${route[@]}" \
        "127.0.0.1:${PORT[$server]}" >"$BENCH_TMP/strace.json" 2>&1
    kill -INT "$spid"
    wait "$spid" 2>/dev/null
    calls=$(awk '$NF == "total" { print $4 }' "$out")
    printf 'syscalls\t%s\t%s\t%s\t%s\t%s\n' "$server" "$shape" "$n" "${calls:-0}" \
        "$(awk -v c="${calls:-0}" -v n="$n" 'BEGIN { printf "%.3f", c / n }')" |
        tee -a "$OUT/targets.tsv" | progress_line
}

# wait_line_count FILE REGEX N SECONDS: until N lines of FILE match.
wait_line_count() {
    local deadline=$(( SECONDS + $4 ))
    while [ "$(grep -cE "$2" "$1" 2>/dev/null)" -lt "$3" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.05
    done
}
