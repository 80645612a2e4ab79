# bench/lib/plots.sh: PNG plots with gnuplot from this run's TSV files:
#   http-throughput.png  req/s through nginx against wrk's concurrency
#   http-p99.png         p99 latency through nginx against concurrency
#   hold-memory.png      server RSS against requests in flight (long-poll)
# Each key entry gives the ratio afcgi/peer measured side by side in the run.

plot_data_http() {
    local dir=$1 s conc
    for s in "${SERVERS[@]}" nginx-lua; do
        : >"$dir/http-$s.dat"
        for conc in $(cut -f1 "$OUT/http.tsv" | sort -n | uniq); do
            grep -qP "^$conc\t$s\t" "$OUT/http.tsv" || continue
            printf '%s %s %s\n' "$conc" \
                "$(first "$(col "\$1 == $conc && \$2 == \"$s\"" 4 "$OUT/http.tsv")")" \
                "$(first "$(col "\$1 == $conc && \$2 == \"$s\"" 6 "$OUT/http.tsv")")" >>"$dir/http-$s.dat"
        done
    done
}

# The key title of server S: its label and afcgi/S of column COL at c=64.
http_title() {
    local s=$1 c=${2% *} metric=${2#* } a p
    [ "$s" = afcgi ] && { echo "${LABEL[$s]}"; return; }
    a=$(first "$(col '$1 == 64 && $2 == "afcgi"' "$c" "$OUT/http.tsv")")
    p=$(first "$(col "\$1 == 64 && \$2 == \"$s\"" "$c" "$OUT/http.tsv")")
    echo "${LABEL[$s]}  ($metric afcgi/peer at c=64: $(ratio "$a" "$p"))"
}

plot_http() {
    local dir=$1 what=$2 col=$3 file=$4 ylabel=$5 logy=$6 s plots=""
    for s in "${SERVERS[@]}" nginx-lua; do
        [ -s "$dir/http-$s.dat" ] || continue
        plots+="${plots:+, }'$dir/http-$s.dat' using 1:$col with linespoints lw 2 pt 7 title '$(http_title "$s" "$([ "$col" = 2 ] && echo "4 req/s" || echo "6 p99")")'"
    done
    [ -n "$plots" ] || return 0
    gnuplot <<EOF
set terminal pngcairo size 1000,720 font "DejaVu Sans,11"
set output '$file'
set title "$what through nginx (wrk, GET /hello), medians of $REPS runs\n$(nproc) cores, $(date -u +%Y-%m-%d); afcgi is one process"
set xlabel 'concurrent connections (wrk -c)'
set ylabel '$ylabel'
set logscale x 2
$( [ "$logy" = 1 ] && echo "set logscale y 10" )
set grid
set key below left vertical Left reverse maxcols 1 noenhanced
plot $plots
EOF
}

# ratio_frac A B: A/B as "0.75x", or as "1/40" when under 0.5 (small ratios stay readable).
ratio_frac() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 == 0 || b + 0 == 0) print "-"
        else if (a / b < 0.5) printf "1/%.0f", b / a; else printf "%.2fx", a / b }'
}

plot_hold() {
    local dir=$1 file=$2 s plots="" a p amax
    [ -s "$OUT/hold.tsv" ] || return 0
    # afcgi's RSS per waiting request at its largest hold, against each peer's at its own
    amax=$(awk -F'\t' '$1 == "afcgi" && $13 == "-" { r = $12 } END { print r + 0 }' "$OUT/hold.tsv")
    for s in "${SERVERS[@]}"; do
        awk -F'\t' -v s="$s" '$1 == s && $3 > 0 && $13 == "-" { printf "%s %.2f\n", $3, $6 / 1024 }' \
            "$OUT/hold.tsv" >"$dir/hold-$s.dat"
        [ -s "$dir/hold-$s.dat" ] || continue
        p=$(awk -F'\t' -v s="$s" '$1 == s && $13 == "-" { r = $12 } END { print r + 0 }' "$OUT/hold.tsv")
        a="${LABEL[$s]}"
        [ "$s" = afcgi ] || a+="  (RSS per waiting request, afcgi/peer = $(ratio_frac "$amax" "$p"))"
        multiplexes "$s" || a+=", holds at most $(tail -1 "$dir/hold-$s.dat" | cut -d' ' -f1)"
        plots+="${plots:+, }'$dir/hold-$s.dat' using 1:2 with linespoints lw 2 pt 7 ps 1.5 title '$a'"
    done
    gnuplot <<EOF
set terminal pngcairo size 1000,720 font "DejaVu Sans,11"
set output '$file'
set title "Memory while requests wait (long-poll, handler sleeps 10 s)\nRSS summed over the server's processes; each server at the most it can hold"
set xlabel 'requests in flight'
set ylabel 'RSS while waiting (MB)'
set logscale x 10
set logscale y 10
set format x '%.0f'
set grid
set key below left vertical Left reverse maxcols 1 noenhanced
plot $plots
EOF
}

plots() {
    local dir=$1 data="$OUT/plot-data"
    mkdir -p "$dir" "$data"
    if [ -s "$OUT/http.tsv" ]; then
        plot_data_http "$data"
        plot_http "$data" Throughput 2 "$dir/http-throughput.png" 'requests/s' 0
        plot_http "$data" 'p99 latency' 3 "$dir/http-p99.png" 'p99 latency (ms)' 1
    fi
    plot_hold "$data" "$dir/hold-memory.png"
}
