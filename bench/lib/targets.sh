# bench/lib/targets.sh: the two counts that do not depend on the machine's
# load: user-space instructions per request (callgrind) and system calls per
# request (strace -c), both on afcgi serving examples/hello.lua at 1x256.
# Each becomes a record of $OUT/results.jsonl (bench_report record).

# afcgi under callgrind serves N requests (1x256) and shuts down cleanly on
# SIGTERM (which is when callgrind writes its file); prints that file's path.
callgrind_run() {
    local n=$1 name=cg$1 out="$BENCH_TMP/callgrind.$1" deadline
    local -a AFCGI_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$out")
    AFCGI_READY=60 start_afcgi "$name" "$AFCGI_HELLO"
    logged timeout 300 "$AFCGI_BENCH" --json -c 1 -m 256 -n "$n" --timeout 30s \
        "127.0.0.1:${PORT[$name]}" >"$BENCH_TMP/$name.json" 2>&1
    kill -TERM "${SERVER_LEADER[$name]}"
    deadline=$(( SECONDS + 60 ))
    while kill -0 "${SERVER_LEADER[$name]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
        sleep 0.1
    done
    server_stop "$name"
    echo "$out"
}

# instructions per request: the difference of two runs (N1 and N2 requests)
# over N2 - N1, so start-up, loading the app and shutdown cancel out.
target_instructions() {
    local n1=$1 n2=$2 cg1 cg2
    say "callgrind: afcgi hello at 1x256, $n1 and $n2 requests"
    cg1=$(callgrind_run "$n1"); cg2=$(callgrind_run "$n2")
    bench_report record instructions "$OUT/results.jsonl" n1="$n1" cg1="$cg1" n2="$n2" cg2="$cg2"
}

# strace_calls SERVER SHAPE N: strace -c -f attached to every process of
# SERVER while afcgi-bench sends N hello requests in SHAPE (after a warm-up).
# A "syscalls" record; strace's own table stays in $OUT/strace-SERVER-SHAPE.txt.
strace_calls() {
    local server=$1 shape=$2 n=$3 out="$OUT/strace-$1-$2.txt" log="$BENCH_TMP/strace.log"
    local -a shp route pargs=()
    local pid spid
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
    bench_report record syscalls "$OUT/results.jsonl" server="$server" shape="$shape" n="$n" \
        strace="$out"
}

# wait_line_count FILE REGEX N SECONDS: until N lines of FILE match.
wait_line_count() {
    local deadline=$(( SECONDS + $4 ))
    while [ "$(grep -cE "$2" "$1" 2>/dev/null)" -lt "$3" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.05
    done
}
