# bench/lib/common.sh: messages, the scratch directory, and the processes the
# harness starts. Every server runs in its own session (setsid), so all of its
# processes (php-fpm's children, nginx's workers, Go's threads) are found by
# session id; spawn-fcgi puts each child in a session of its own, so a server
# is a list of session ids. CPU time and memory are summed over the server's
# processes, and stopping a server signals each of its PIDs, never a name.
# Figures do not stay in the shell: each measurement becomes a JSON line
# through bench/lib/report.lua (bench_report record ...), which also makes
# every table and plot input (bench_report run, longpoll, ...).

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# bench_report COMMAND ARGS...: the reporting program (see its top comment).
bench_report() { luajit "$BENCH_DIR/lib/report.lua" "$@"; }
# json_get KEY... <<<JSON: fields of a JSON document (afcgi's /status, an
# afcgi-bench report), one line each.
json_get() { bench_report get "$@"; }

CLK_TCK=$(getconf CLK_TCK)
PAGE_KB=$(( $(getconf PAGESIZE) / 1024 ))

declare -A SERVER_SID=()        # server name -> its session ids, space-separated

# Scratch directory for configs, logs and builds; removed on exit unless --keep.
bench_tmp_init() {
    BENCH_TMP=$(mktemp -d /tmp/afcgi-bench.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local name pids
    # load generators and strace this shell started in the background
    pids=$(jobs -p)
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
    for name in "${!SERVER_SID[@]}"; do
        server_stop "$name"
    done
    if [ -n "${BENCH_KEEP_TMP:-}" ]; then
        say "kept scratch directory $BENCH_TMP"
    else
        rm -rf "$BENCH_TMP"
    fi
}

# The PIDs of every live process (zombies left out) in the sessions listed in $1.
session_pids() {
    local sids=" $1 " f line rest
    local -a fld
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        rest=${line##*) }
        read -ra fld <<<"$rest"
        [[ $sids == *" ${fld[3]} "* ]] && [ "${fld[0]}" != Z ] && echo "${f//[^0-9]/}"
    done
    return 0
}

# Sums over the sessions listed in $1 of fields of /proc/PID/stat counted after the comm
# field (0 = state): utime+stime (12, 13) in ticks, rss (22) in pages.
session_stat_sum() {
    local sids=" $1 " f line rest ticks=0 pages=0 n=0
    local -a fld
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        rest=${line##*) }
        read -ra fld <<<"$rest"
        [[ $sids == *" ${fld[3]} "* ]] || continue
        ticks=$(( ticks + fld[11] + fld[12] ))
        pages=$(( pages + fld[21] ))
        n=$(( n + 1 ))
    done
    echo "$ticks $(( pages * PAGE_KB )) $n"
}

# CPU ticks (utime+stime) of server $1, summed over its processes.
server_ticks() { local s; s=$(session_stat_sum "${SERVER_SID[$1]}"); echo "${s%% *}"; }

# "RSS_KB PSS_KB NPROC" of server $1: RSS summed over its processes (shared
# pages count once per process), PSS (shared pages split between them).
server_mem() {
    local pid rss=0 pss=0 n=0 v
    for pid in $(session_pids "${SERVER_SID[$1]}"); do
        v=$(awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { print r + 0, p + 0 }' \
            "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
        rss=$(( rss + ${v% *} )); pss=$(( pss + ${v#* } )); n=$(( n + 1 ))
    done
    echo "$rss $pss $n"
}

# logcmd CMD...: writes CMD to $COMMANDS (default $OUT/commands.txt; each
# distinct command once, the scratch directory shown as $TMP): the exact
# commands of a run.
logcmd() {
    local line file=${COMMANDS:-$OUT/commands.txt}
    line=$(printf '%q ' "$@"); line=${line% }; line=${line//"$BENCH_TMP"/\$TMP}
    grep -qxF -- "$line" "$file" 2>/dev/null || echo "$line" >>"$file"
}

# logged CMD...: logcmd, then runs CMD (in the foreground: a command started
# with & is logged with logcmd first, so that $! is its own PID).
logged() { logcmd "$@"; "$@"; }

declare -A SERVER_LEADER=()     # server name -> PID of the process this shell started

# server_start NAME LOG CMD...: runs CMD in a new session, stdout and stderr to LOG.
server_start() {
    local name=$1 log=$2; shift 2
    logcmd "$@"
    : >"$log"               # now, not in the child: a poll must never see a previous run's log
    setsid "$@" >"$log" 2>&1 </dev/null &
    SERVER_SID[$name]=$!
    SERVER_LEADER[$name]=$!
}

# pid_live PID: the process exists and is not a zombie.
pid_live() {
    local line
    read -r line 2>/dev/null <"/proc/$1/stat" || return 1
    line=${line##*) }
    [ "${line%% *}" != Z ]
}

# Server $1 still runs: the process this shell started (which may not have
# reached its setsid() yet), or any process of its sessions.
server_alive() {
    { [ -n "${SERVER_LEADER[$1]:-}" ] && pid_live "${SERVER_LEADER[$1]}"; } ||
        [ -n "$(session_pids "${SERVER_SID[$1]}")" ]
}

# SIGTERM to every process of the server, SIGKILL to what is left after 5 s.
server_stop() {
    local name=$1 sid=${SERVER_SID[$1]:-} pids deadline
    [ -n "$sid" ] || return 0
    [ -z "${SERVER_LEADER[$name]:-}" ] || sid+=" ${SERVER_LEADER[$name]}"
    # (a process may be gone before its signal: that is no failure, also
    # not for a caller under set -e)
    pids=$(session_pids "$sid")
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
    deadline=$(( SECONDS + 5 ))
    while pids=$(session_pids "$sid"); [ -n "$pids" ] && [ $SECONDS -lt $deadline ]; do
        sleep 0.05
    done
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    [ -z "${SERVER_LEADER[$name]:-}" ] || wait "${SERVER_LEADER[$name]}" 2>/dev/null || true
    unset "SERVER_SID[$name]" "SERVER_LEADER[$name]"
}

# PID's CPU ticks (utime+stime) alone, not its session's.
pid_ticks() {
    local line rest
    local -a fld
    read -r line 2>/dev/null <"/proc/$1/stat" || { echo 0; return; }
    rest=${line##*) }
    read -ra fld <<<"$rest"
    echo $(( fld[11] + fld[12] ))
}

declare -A PORT=()              # server name -> its TCP port on 127.0.0.1

# start_afcgi NAME APP [OPTIONS...]: $AFCGI (default ./afcgi of the checkout)
# as server NAME, on a port of its choosing (--listen 127.0.0.1:0), OPTIONS
# before APP; waits for its readiness line ($AFCGI_READY seconds, default
# 20) and sets PORT[NAME]. A caller may set AFCGI_WRAP (an array: a program
# to run afcgi under, e.g. valgrind) and AFCGI_ENV (NAME=VALUE words for its
# environment).
start_afcgi() {
    local name=$1 app=$2 log="$BENCH_TMP/$1.log"; shift 2
    local -a pre=()
    [ -z "${AFCGI_ENV:-}" ] || read -ra pre <<<"env $AFCGI_ENV"
    [ -z "${AFCGI_WRAP+set}" ] || pre+=("${AFCGI_WRAP[@]}")
    server_start "$name" "$log" "${pre[@]}" "${AFCGI:-$ROOT/afcgi}" --listen 127.0.0.1:0 "$@" "$app"
    wait_line "$log" 'ready, listening on' "${AFCGI_READY:-20}" || { cat "$log" >&2; die "$name did not start"; }
    PORT[$name]=$(sed -n 's/.*ready, listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
}

# A TCP port on 127.0.0.1 that no socket uses now (the server binds it next),
# below the ephemeral range so that no client connection takes it meanwhile.
free_port() {
    local port used low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    [ "$low" -gt 11000 ] || low=32768
    used=$(ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
    while :; do
        port=$(( 10000 + RANDOM % (low - 10000) ))
        grep -qx "$port" <<<"$used" || { echo "$port"; return; }
    done
}

# wait_port NAME PORT [SECONDS]: polls until PORT accepts a connection; fails
# when the server's processes are gone or the deadline (default 20 s) passes.
wait_port() {
    local name=$1 port=$2 deadline=$(( SECONDS + ${3:-20} ))
    while [ $SECONDS -lt $deadline ]; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        server_alive "$name" || return 1
        sleep 0.05
    done
    return 1
}

# wait_line FILE REGEX [SECONDS]: polls FILE until a line matches REGEX.
wait_line() {
    local file=$1 re=$2 deadline=$(( SECONDS + ${3:-20} ))
    while [ $SECONDS -lt $deadline ]; do
        grep -qE "$re" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
