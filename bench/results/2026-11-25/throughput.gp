# gnuplot /work/main/bench/results/2026-11-25/throughput.gp (or with -e "terminal='png'")
if (!exists("terminal")) terminal = "pngcairo"
set terminal @terminal size 1100,600
set output "/work/main/bench/results/2026-11-25/throughput.png"
set title "4 KiB operations per second against concurrent clients, 2026-11-25T03:36:17Z (full run)"
set xlabel "concurrent clients (log scale)"
set ylabel "operations per second (log scale)"
set logscale x 2
set logscale y 10
set xtics (1, 8, 64, 256)
set xrange [0.6666666666666666:384.0]
set grid
set key outside right top vertical
set datafile missing "?"
data = "/work/main/bench/results/2026-11-25/throughput.dat"
plot data using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "dfs appends", \
     data using 1:3 with linespoints lw 2 pt 5 lc rgb "#2ca02c" title "dfs puts (new files)", \
     data using 1:4 with linespoints lw 2 pt 9 lc rgb "#9467bd" title "dfs reads", \
     data using 1:5 with linespoints lw 2 dt 2 pt 4 lc rgb "#d62728" title "etcd puts (new keys)", \
     data using 1:6 with linespoints lw 2 dt 2 pt 8 lc rgb "#ff7f0e" title "etcd gets (linearizable)"
