#!/bin/bash
# Requests/s of examples/http_bench_server under wrk over loopback, modes interleaved per round.
#   cargo build --release --features axum --example http_bench_server && bash benches/http_wrk.sh
# Server pinned to CPU 0 (1 worker), wrk to CPU 1. Besides wall-clock requests/s it reports requests
# per CPU-second of the server process (utime+stime from /proc), which other processes competing
# for CPU 0 disturb less. Needs wrk (apt-get install wrk) and taskset. Prints a row per round and
# mode, then the medians per mode and their ratios to plain's (all on stdout).
BIN=${BIN:-target/release/examples/http_bench_server}
ROUNDS=${ROUNDS:-3}; DUR=${DUR:-5}; CONN=${CONN:-32}
MODES=${MODES:-"plain noop-layer tollgate-allow tollgate-allow-outer tollgate-allow-ietf tollgate-allow-noheaders tollgate-allow-noheaders-outer tollgate-allow-noheaders-wrapped tollgate-deny governor-allow governor-deny"}
PORT=${PORT:-18080}
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
ROWS=$(mktemp)
{
for r in $(seq $ROUNDS); do
  for m in $MODES; do
    taskset -c 0 $BIN $m 127.0.0.1:$PORT 2>/dev/null & pid=$!
    sleep 0.4
    taskset -c 1 wrk -t1 -c$CONN -d1s http://127.0.0.1:$PORT/ >/dev/null 2>&1
    c0=$(cpu $pid)
    out=$(taskset -c 1 wrk -t1 -c$CONN -d${DUR}s --latency http://127.0.0.1:$PORT/)
    c1=$(cpu $pid)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    cpups=$(awk -v r=$reqs -v c=$((c1-c0)) -v t=$TCK 'BEGIN { if (c>0) printf "%.0f", r*t/c; else print "nan" }')
    echo "round=$r mode=$m rps=$rps per_cpu_s=$cpups p50=$p50 p99=$p99 non2xx=${non2xx:-0} load=$(cut -d' ' -f1 /proc/loadavg)"
    kill $pid; wait $pid 2>/dev/null
  done
done
} | tee "$ROWS"
# Per mode: the median requests/s (wall clock and per CPU-second of the server) and p99 over the
# rounds (the mean of the middle two for an even count; rows without a number are left out),
# the ratios of those medians to plain's, and the median of per-round ratios to plain (paired).
awk '
  function med(s,   a, n, i, j, t) { n = split(s, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    if (n == 0) return 0
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
  function add(list, v) { return v ~ /^[0-9.]+$/ ? list " " v : list }
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    m = f["mode"]; if (!(m in seen)) { seen[m] = 1; order[++n] = m }
    rps[m] = add(rps[m], f["rps"]); cpu[m] = add(cpu[m], f["per_cpu_s"]); p99[m] = add(p99[m], ms(f["p99"]))
    r = f["round"]; if (!(r in rseen)) { rseen[r] = 1; rounds[++nr] = r }
    if (f["per_cpu_s"] ~ /^[0-9.]+$/) c[m, r] = f["per_cpu_s"] }
  END {
    base = med(rps["plain"]); basec = med(cpu["plain"]); basep = med(p99["plain"])
    printf "\n%-34s %10s %7s %10s %7s %7s %9s %7s\n", "mode (median of rounds)", "req/s", "ratio", "req/cpu-s", "ratio", "paired", "p99 ms", "ratio"
    for (i = 1; i <= n; i++) { m = order[i]
      # paired: the median over rounds of this mode req/cpu-s over plain req/cpu-s, same round
      # (drift between rounds cancels).
      pr = ""; for (j = 1; j <= nr; j++) { r = rounds[j]; if (((m, r) in c) && (("plain", r) in c) && c["plain", r] > 0) pr = pr " " c[m, r] / c["plain", r] }
      printf "%-34s %10.0f %7.3f %10.0f %7.3f %7.3f %9.2f %7.2f\n", m, med(rps[m]), (base ? med(rps[m]) / base : 0), med(cpu[m]), (basec ? med(cpu[m]) / basec : 0), med(pr), med(p99[m]), (basep ? med(p99[m]) / basep : 0) }
  }' "$ROWS"
rm -f "$ROWS"
