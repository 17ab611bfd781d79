#!/usr/bin/env bash
# CPU cost per request: Redis and duplexd (one or more builds) under the same
# redis-benchmark load, measured with `perf stat` on the server process: ops/s and CPU time
# per request (task-clock; also cycles and instructions where the machine has hardware
# counters: this VM has none), for SET and GET (100-byte values, 50 clients, random keys
# out of 100,000, pipeline P). CPU time per request holds up on a busy machine far better
# than ops/s does, so it is the figure to compare builds with.
#
# Usage: benches/resp_cycles.sh [requests per run, default 1000000] [pipeline, default 16]
#   DUPLEXD_BINS="/path/a /path/b"  compare several duplexd builds (default: a release
#                                   build of this tree)
#   DUPLEX_SYNC=interval:1000       duplexd's --sync (default interval:1000; Redis runs
#                                   appendfsync everysec to match; `always` for both)
# Needs perf, redis-server and redis-benchmark; without them it says so and exits 0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-1000000}"
P="${2:-16}"
SYNC="${DUPLEX_SYNC:-interval:1000}"
case "$SYNC" in always) FSYNC=always ;; *) FSYNC=everysec ;; esac

for tool in perf redis-server redis-cli redis-benchmark; do
    if ! command -v "$tool" >/dev/null; then
        echo "resp_cycles: $tool is not installed; skipped (apt-get install linux-perf redis-server redis-tools)." >&2
        exit 0
    fi
done
if [[ -z "${DUPLEXD_BINS:-}" ]]; then
    cargo build -q --release -p duplex-server --bin duplexd
    DUPLEXD_BINS="$ROOT/target/release/duplexd"
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -9 "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=17450

wait_ping() {
    for _ in $(seq 1 200); do
        [[ "$(redis-cli -p "$PORT" PING 2>/dev/null || true)" == "PONG" ]] && return 0
        sleep 0.05
    done
    echo "server on $PORT did not answer PING" >&2
    return 1
}

stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

# measure NAME TEST: runs redis-benchmark -t TEST under perf stat of $PID.
measure() {
    local name="$1" test="$2"
    perf stat -x, -e task-clock,cycles,instructions -p "$PID" -o "$WORK/perf.csv" -- \
        redis-benchmark -p "$PORT" -t "$test" -n "$N" -r 100000 -d 100 -c 50 -P "$P" -q \
        >"$WORK/bench.txt" 2>&1
    local rps ms cycles instr
    rps="$(tr '\r' '\n' <"$WORK/bench.txt" | grep -i "requests per second" | tail -1 | sed -E 's/.*: ([0-9.]+) requests.*/\1/')"
    ms="$(grep ',task-clock' "$WORK/perf.csv" | cut -d, -f1)"
    cycles="$(grep ',cycles' "$WORK/perf.csv" | cut -d, -f1)"
    instr="$(grep ',instructions' "$WORK/perf.csv" | cut -d, -f1)"
    awk -v n="$name" -v t="$test" -v r="$rps" -v ms="$ms" -v c="$cycles" -v i="$instr" -v N="$N" \
        'BEGIN { printf "%-28s %-4s %10.0f ops/s %7.2f us CPU/req", n, t, r, ms * 1000 / N;
                 if (c ~ /^[0-9]+$/) printf " %8.0f cycles/req %8.0f instr/req", c / N, i / N;
                 printf "\n" }'
}

echo "resp_cycles: $N requests per run, pipeline $P, 50 clients, 100-byte values; load $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$WORK/redis" && mkdir -p "$WORK/redis"
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync "$FSYNC" --daemonize no --logfile "$WORK/redis.log" &
PID=$!
wait_ping
measure "redis (appendfsync $FSYNC)" set
measure "redis (appendfsync $FSYNC)" get
stop
k=0
for bin in $DUPLEXD_BINS; do
    k=$((k + 1))
    rm -rf "$WORK/d$k" && mkdir -p "$WORK/d$k"
    "$bin" --port "$PORT" --data "$WORK/d$k/data" --archive-dir "$WORK/d$k/archive" \
        --backup-dir "$WORK/d$k/backups" --sync "$SYNC" >"$WORK/d$k.log" 2>&1 &
    PID=$!
    wait_ping
    measure "duplexd#$k ($SYNC)" set
    measure "duplexd#$k ($SYNC)" get
    stop
done
echo "builds: $(k=0; for b in $DUPLEXD_BINS; do k=$((k + 1)); printf '#%d %s  ' "$k" "$b"; done)"
