# bench/lib/report.sh: the tables (Markdown, printed and saved as
# OUT/report.md) from the TSV files bench/lib/measure.sh and targets.sh wrote.
# Every figure is the median of the repetitions, with min-max beside it; a
# ratio afcgi/peer divides two medians measured side by side in this run.

declare -A LABEL=([afcgi]="afcgi (1 process)" [php]="php-fpm (64 children)"
    [go]="Go net/http/fcgi" [c]="libfcgi C (64 procs)" [wsapi]="WSAPI/LuaJIT (64 procs)"
    [nginx-lua]="nginx + Lua module")

# col COND COL FILE: "median min max" of column COL over the lines of FILE
# (tab-separated) for which the awk condition COND holds.
col() {
    [ -s "$3" ] || { echo "- - -"; return; }
    awk -F'\t' "$1 { print \$$2 }" "$3" | grep -v '^-$' | stats3
}

# fmt_mmm "MED MIN MAX" [DECIMALS]: "MED (MIN–MAX)", or MED alone when all are one run.
fmt_mmm() {
    local med min max d=${2:-0}
    read -r med min max <<<"$1"
    [ "$med" = - ] && { echo "-"; return; }
    if [ "$min" = "$max" ]; then
        printf "%.${d}f" "$med"
    else
        printf "%.${d}f (%.${d}f–%.${d}f)" "$med" "$min" "$max"
    fi
}

# ratio A B: A/B as "1.23x", "-" when either is missing or B is 0.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'
}

first() { echo "${1%% *}"; }

# The error kinds summed over a server's runs: "read=12,protocol=3".
errors_of() {
    awk -F'\t' "$1 { print \$$2 }" "$3" | tr ',' '\n' | grep '=' |
        awk -F= '{ s[$1] += $2 } END { for (k in s) o = o (o ? "," : "") k "=" s[k]; print o ? o : "none" }'
}

report_direct() {
    local f="$OUT/direct.tsv" workload shape s base_rps base_cpu rps p99 cpu cond probe
    [ -s "$f" ] || return 0
    echo "### Direct FastCGI (afcgi-bench, closed loop, straight to the server)"
    echo
    echo "Shape CxM: C connections, M requests in flight on each. req/s counts valid answers only."
    echo "CPU: server utime+stime over all its processes, per valid answer. afcgi/peer: ratio of medians."
    echo
    echo "| workload | shape | server | req/s | p99 ms | CPU µs/req | req/s afcgi/peer | CPU afcgi/peer | errors |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    while IFS=$'\t' read -r workload shape; do
        cond="\$1 == \"$workload\" && \$2 == \"$shape\" && \$3 == \"afcgi\" && \$4 != \"probe\""
        base_rps=$(first "$(col "$cond" 5 "$f")"); base_cpu=$(first "$(col "$cond" 11 "$f")")
        for s in "${SERVERS[@]}"; do
            cond="\$1 == \"$workload\" && \$2 == \"$shape\" && \$3 == \"$s\""
            grep -qP "^$workload\t$shape\t$s\t" "$f" || continue
            probe=
            grep -qP "^$workload\t$shape\t$s\tprobe\t" "$f" && probe=" (probe)"
            rps=$(col "$cond" 5 "$f"); p99=$(col "$cond" 7 "$f"); cpu=$(col "$cond" 11 "$f")
            printf '| %s | %s | %s%s | %s | %s | %s | %s | %s | %s |\n' "$workload" "$shape" \
                "${LABEL[$s]}" "$probe" "$(fmt_mmm "$rps")" "$(fmt_mmm "$p99" 2)" "$(fmt_mmm "$cpu" 1)" \
                "$([ "$s" = afcgi ] || [ -n "$probe" ] && echo - || ratio "$base_rps" "$(first "$rps")")" \
                "$([ "$s" = afcgi ] || [ -n "$probe" ] && echo - || ratio "$base_cpu" "$(first "$cpu")")" \
                "$(errors_of "$cond" 10 "$f")"
        done
    done < <(cut -f1,2 "$f" | awk '!seen[$0]++')
    echo
}

report_http() {
    local f="$OUT/http.tsv" conc s base rps p99 bcpu ncpu cond
    [ -s "$f" ] || return 0
    echo "### Through nginx (wrk, HTTP/1.1 keep-alive, GET /hello; nginx: upstream keepalive, fastcgi_keep_conn on)"
    echo
    echo "nginx worker_processes $NGINX_WORKERS. CPU: the FastCGI server's and nginx's, per request."
    echo "c/(req/s): the mean time a request took, by Little's law (each of wrk's c connections"
    echo "always has one request out). wrk's percentiles count only answered requests: where"
    echo "c/(req/s) is above p99 (marked !), some connections waited without an answer for much of"
    echo "the run, i.e. the server served a subset of the clients."
    echo
    echo "| wrk -c | server | req/s | p50 ms | p99 ms | c/(req/s) ms | server CPU µs/req | nginx CPU µs/req | req/s afcgi/peer | errors |"
    echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for conc in $(cut -f1 "$f" | awk '!seen[$0]++'); do
        base=$(first "$(col "\$1 == $conc && \$2 == \"afcgi\"" 4 "$f")")
        for s in "${SERVERS[@]}" nginx-lua; do
            cond="\$1 == $conc && \$2 == \"$s\""
            grep -qP "^$conc\t$s\t" "$f" || continue
            rps=$(col "$cond" 4 "$f"); p99=$(col "$cond" 6 "$f")
            bcpu=$(col "$cond" 10 "$f"); ncpu=$(col "$cond" 11 "$f")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$conc" "${LABEL[$s]}" \
                "$(fmt_mmm "$rps")" "$(fmt_mmm "$(col "$cond" 5 "$f")" 2)" "$(fmt_mmm "$p99" 2)" \
                "$(awk -v c="$conc" -v r="$(first "$rps")" -v p="$(first "$p99")" 'BEGIN {
                    if (r + 0 == 0) { print "-"; exit }
                    m = c / r * 1000; printf "%.2f%s", m, (m > p ? " !" : "") }')" \
                "$(fmt_mmm "$bcpu" 1)" "$(fmt_mmm "$ncpu" 1)" \
                "$([ "$s" = afcgi ] && echo - || ratio "$base" "$(first "$rps")")" \
                "$(awk -F'\t' "$cond"' { if ($8 > 0) n += $8; if ($9 != "-") e = e " " $9 }
                    END { o = n ? "non-2xx=" n : ""; if (e) o = o (o ? "," : "") "socket" e; print o ? o : "none" }' "$f")"
        done
    done
    echo
}

report_hold() {
    local f="$OUT/hold.tsv"
    [ -s "$f" ] || return 0
    echo "### Long-poll: requests waiting 10 s, held open by afcgi-bench --hold"
    echo
    echo "RSS and PSS summed over the server's processes, before and while the requests wait."
    echo "growth/req: (while - before) / held. total/req: RSS while waiting / held (for servers"
    echo "with one request per process, the whole process is what a waiting request costs)."
    echo
    echo "| server | held / asked | connections | processes | RSS before → waiting | RSS growth/req | PSS growth/req | RSS total/req | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    awk -F'\t' -v OFS=' | ' '
        function kb(b) { if (b == "-" || $3 == 0 || $13 != "-") return "-"   # none held, or they failed
                         return b >= 1048576 ? sprintf("%.2f MB", b / 1048576) : sprintf("%.2f KB", b / 1024) }
        { print "| " $1, $3 " / " $2, $4, $9, sprintf("%.1f → %.1f MB", $5 / 1024, $6 / 1024),
                kb($10), kb($11), kb($12), $13 " |" }' "$f" |
        sed -e 's/^| afcgi /| afcgi (1 process) /' -e 's/^| php /| php-fpm (64 children) /' \
            -e 's/^| go /| Go net\/http\/fcgi /' -e 's/^| c /| libfcgi C (64 procs) /' \
            -e 's/^| wsapi /| WSAPI\/LuaJIT (64 procs) /'
    echo
}

# One row of the targets table: NAME WANT MEASURED VERDICT-EXPRESSION
target_row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }

# verdict VALUE OP LIMIT: "met" or "missed" (VALUE - when not measured).
verdict() {
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (v == "-" || v == "") { print "not measured"; exit }
        ok = op == ">=" ? v + 0 >= l + 0 : v + 0 <= l + 0
        print ok ? "**met**" : "**missed**" }'
}

report_targets() {
    local d="$OUT/direct.tsv" h="$OUT/http.tsv" hold="$OUT/hold.tsv" t="$OUT/targets.tsv"
    local a256 a64 c64 a256cpu c64cpu r1 r2 r3 n100 ngx_a ngx_c ngx_p99 mem held ir sc
    echo "### Targets (afcgi, one process)"
    echo
    echo "| target | wanted | measured | verdict |"
    echo "| --- | --- | --- | --- |"
    a256=$(first "$(col '$1 == "hello" && $2 == "1x256" && $3 == "afcgi"' 5 "$d")")
    a256cpu=$(first "$(col '$1 == "hello" && $2 == "1x256" && $3 == "afcgi"' 11 "$d")")
    a64=$(first "$(col '$1 == "hello" && $2 == "64x1" && $3 == "afcgi"' 5 "$d")")
    c64=$(first "$(col '$1 == "hello" && $2 == "64x1" && $3 == "c"' 5 "$d")")
    c64cpu=$(first "$(col '$1 == "hello" && $2 == "64x1" && $3 == "c"' 11 "$d")")
    r1=$(ratio "$a256" "$c64"); r2=$(ratio "$a256cpu" "$c64cpu"); r3=$(ratio "$a64" "$c64")
    target_row "direct 1x256 req/s vs libfcgi C 64x1" ">= 1.5x" "$r1 ($a256 vs $c64)" "$(verdict "${r1%x}" '>=' 1.5)"
    target_row "direct 1x256 CPU/req vs libfcgi C 64x1" "<= 0.5x" "$r2 ($a256cpu vs $c64cpu µs)" "$(verdict "${r2%x}" '<=' 0.5)"
    target_row "direct 64x1 req/s vs libfcgi C 64x1" ">= 1.0x" "$r3 ($a64 vs $c64)" "$(verdict "${r3%x}" '>=' 1.0)"
    ngx_a=$(first "$(col '$1 == 64 && $2 == "afcgi"' 4 "$h")")
    ngx_c=$(first "$(col '$1 == 64 && $2 == "c"' 4 "$h")")
    ngx_p99=$(first "$(col '$1 == 64 && $2 == "afcgi"' 6 "$h")")
    r1=$(ratio "$ngx_a" "$ngx_c")
    target_row "behind nginx, wrk -c64, req/s vs libfcgi C" ">= 1.1x" "$r1 ($ngx_a vs $ngx_c)" "$(verdict "${r1%x}" '>=' 1.1)"
    target_row "behind nginx, wrk -c64, p99" "<= 5 ms" "$ngx_p99 ms" "$(verdict "$ngx_p99" '<=' 5)"
    n100=$(awk -F'\t' '$1 == "afcgi" && $13 == "-" { n = $2 } END { print n }' "$hold" 2>/dev/null)
    mem=$(awk -F'\t' -v n="$n100" '$1 == "afcgi" && $2 == n && $13 == "-" { printf "%.0f", $10 }' "$hold" 2>/dev/null)
    held=$(awk -F'\t' -v n="$n100" '$1 == "afcgi" && $2 == n && $13 == "-" { print $3 }' "$hold" 2>/dev/null)
    target_row "RSS per waiting request, 100,000 in flight" "<= 2048 B" \
        "${mem:--} B (${held:-0} held of ${n100:-0})" \
        "$( [ "${n100:-0}" = 100000 ] && [ "$held" = 100000 ] && verdict "$mem" '<=' 2048 || echo "not measured at 100,000")"
    ir=$(awk -F'\t' '$1 == "instructions" { print $6 }' "$t" 2>/dev/null)
    target_row "user-space instructions per hello (callgrind, difference of two runs)" "<= 10,000" \
        "${ir:--}" "$(verdict "${ir:--}" '<=' 10000)"
    sc=$(awk -F'\t' '$1 == "syscalls" && $2 == "afcgi" && $3 == "1x256" { print $6 }' "$t" 2>/dev/null)
    target_row "system calls per request at 1x256 (strace -c -f)" "<= 0.2" "${sc:--}" "$(verdict "${sc:--}" '<=' 0.2)"
    echo
    if [ -s "$t" ]; then
        echo "Counts: $(awk -F'\t' '$1 == "instructions" { printf "callgrind Ir %s after %s requests, %s after %s; ", $3, $2, $5, $4 }
            $1 == "syscalls" { printf "%s %s: %s calls for %s requests (%s/req); ", $2, $3, $5, $4, $6 }' "$t")"
        echo
    fi
}

report() {
    echo "## Results ($(sed -n 's/^mode=\([a-z]*\).*/\1/p' "$OUT/settings.txt") run, started $(sed -n 's/^started=//p' "$OUT/settings.txt"))"
    echo
    echo "Medians of $REPS side-by-side repetitions (min–max in brackets), $DURATION each"\
"$([ "$SWEEP_DURATION" != "$DURATION" ] && echo " ($SWEEP_DURATION through nginx)"), on $(nproc) cores shared with other work;"\
" load average at start/end: $(sed -n 's/^load_at_start=//p' "$OUT/settings.txt") / $(sed -n 's/^load_at_end=\([^ ]*\ [^ ]*\ [^ ]*\).*/\1/p' "$OUT/settings.txt")."
    echo
    report_direct
    report_http
    report_hold
    report_targets
    echo "Versions: $(paste -sd';' "$OUT/versions.txt" | sed 's/;/; /g')"
}

record_versions() {
    echo "afcgi: $("$AFCGI" --version 2>&1 | head -1), binary of $(date -u -r "$ROOT/afcgi" +%H:%MZ) from $(git -C "$ROOT" rev-parse --short HEAD)$(
        [ -z "$(git -C "$ROOT" status --porcelain -- src lua 2>/dev/null)" ] || echo " + uncommitted src/ or lua/ changes")"
    echo "afcgi-bench: $("$AFCGI_BENCH" --version 2>&1 | head -1)"
    echo "nginx: $(nginx -v 2>&1 | head -1)"
    echo "lua-nginx-module: $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua)"
    echo "php: $(php-fpm8.2 -v 2>&1 | head -1)"
    echo "go: $(go version)"
    echo "libfcgi: $(dpkg-query -W -f='${Version}' libfcgi-dev)"
    echo "spawn-fcgi: $(dpkg-query -W -f='${Version}' spawn-fcgi)"
    echo "wsapi-fcgi: $(dpkg-query -W -f='${Version}' lua-wsapi-fcgi)"
    echo "luajit: luajit2 $(dpkg-query -W -f='${Version}' luajit2) ($(luajit -v 2>&1 | cut -d' ' -f1,2))"
    echo "lua-cjson: $(dpkg-query -W -f='${Version}' lua-cjson)"
    echo "wrk: $(wrk -v 2>&1 | head -1)"
    echo "valgrind: $(valgrind --version)"
    echo "strace: $(strace -V | head -1)"
    echo "kernel: $(uname -sr)"
    echo "cpu: $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
}
