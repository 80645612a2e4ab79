# bench/soak.d/soak.gp: RSS and open descriptors of afcgi during a soak run.
# Loaded by the script `luajit bench/lib/report.lua soak-plot OUT soak.gp
# MINUTES EVERY` writes (bench/soak pipes it into gnuplot), which first
# defines from OUT/soak.jsonl:
#   $samples  time rss_kb fds reload_generation, one line a second (time 0 =
#             before the traffic)
#   $reloads  time generation version, one line per SIGHUP
#   png, minutes, every  the output file and the figures of the title
set terminal pngcairo size 900,600 font "DejaVu Sans,10" noenhanced
set output png
set key bottom right opaque box width 1
set grid ytics lc rgb "#dddddd"
set xlabel "time (min)"
set xrange [0:*]
set yrange [0:*]
set y2range [0:1]
unset y2tics
set lmargin 10
set rmargin 3

set multiplot layout 2,1 title sprintf("afcgi soak: %s min of mixed traffic, SIGHUP reload every %s s (dashed lines)", minutes, every)

set ylabel "RSS (MiB)"
set format x ""
unset xlabel
plot $reloads using ($1/60):(0):(0):(1) axes x1y2 with vectors nohead dt 2 lc rgb "#999999" notitle, \
     $samples using ($1/60):($2/1024) with lines lw 1.5 lc rgb "#1f77b4" title "VmRSS"

set ylabel "open descriptors"
set format x "%g"
set xlabel "time (min)"
plot $reloads using ($1/60):(0):(0):(1) axes x1y2 with vectors nohead dt 2 lc rgb "#999999" notitle, \
     $samples using ($1/60):3 with lines lw 1.5 lc rgb "#d62728" title "fds"

unset multiplot
