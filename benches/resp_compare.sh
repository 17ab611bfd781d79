#!/usr/bin/env bash
# Side-by-side RESP comparison: Redis (appendonly yes, appendfsync always, then everysec)
# against duplexd (sync always, then interval:1000), on loopback, driven by the same
# redis-benchmark run: SET and GET, 100-byte values, 50 clients, random keys out of 100,000,
# pipeline 1 and 16. Prints ops/s, p50 and p99 per run and the ratios the server issue sets
# as targets:
#   duplexd always   SET >= 1.0x Redis always
#   duplexd          GET >= 0.8x Redis
#   duplexd interval SET >= 0.8x Redis everysec
#
# Usage: benches/resp_compare.sh [requests per run, default 100000]
# Needs redis-server, redis-cli and redis-benchmark (Debian/Ubuntu: apt-get install
# redis-server redis-tools); without them it says so and skips (exit 0): a benchmark never
# installs packages by itself. Builds duplexd in release mode. Each server
# gets a fresh data directory under $TMPDIR (same file system as the other runs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-100000}"
CLIENTS=50
SIZE=100
KEYSPACE=100000

for tool in redis-server redis-cli redis-benchmark; do
    if ! command -v "$tool" >/dev/null; then
        echo "resp_compare: $tool is not installed, so the Redis comparison is skipped." >&2
        echo "  To run it: apt-get install redis-server redis-tools (Debian/Ubuntu), then run this again." >&2
        exit 0
    fi
done
cargo build -q --release -p duplex-server --bin duplexd
DUPLEXD="$ROOT/target/release/duplexd"

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -9 "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=17400

wait_ping() {
    for _ in $(seq 1 200); do
        [[ "$(redis-cli -p "$PORT" PING 2>/dev/null || true)" == "PONG" ]] && return 0
        sleep 0.05
    done
    echo "server on $PORT did not answer PING" >&2
    return 1
}

start_redis() { # $1 = always | everysec
    rm -rf "$WORK/redis" && mkdir -p "$WORK/redis"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
        --appendonly yes --appendfsync "$1" --daemonize no --logfile "$WORK/redis.log" &
    PID=$!
    wait_ping
}

start_duplexd() { # $1 = always | interval:1000
    rm -rf "$WORK/duplex" && mkdir -p "$WORK/duplex"
    "$DUPLEXD" --port "$PORT" --data "$WORK/duplex/data" --backup-dir "$WORK/duplex/backups" \
        --archive-dir "$WORK/duplex/archive" --backup-interval 0 --sync "$1" --log warn \
        2>"$WORK/duplexd.log" &
    PID=$!
    wait_ping
}

stop() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

declare -A RPS P50 P99
bench() { # $1 = label
    local label="$1" p t line
    for p in 1 16; do
        for t in set get; do
            line="$(redis-benchmark -p "$PORT" -t "$t" -n "$N" -c "$CLIENTS" -d "$SIZE" -r "$KEYSPACE" -P "$p" --csv 2>/dev/null |
                grep -i "^\"$t\"" | tr -d '"')"
            IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$line"
            RPS["$label/$t/$p"]="$rps"
            P50["$label/$t/$p"]="$p50"
            P99["$label/$t/$p"]="$p99"
            printf '%-18s %-3s P=%-2s %12s ops/s   p50 %7s ms   p99 %7s ms\n' "$label" "${t^^}" "$p" "$rps" "$p50" "$p99"
        done
    done
}

echo "redis-benchmark: $N requests per run, $CLIENTS clients, ${SIZE}-byte values, keyspace $KEYSPACE"
echo "$(redis-server --version)"
echo
start_redis always;           bench "redis always";      stop
start_redis everysec;         bench "redis everysec";    stop
start_duplexd always;         bench "duplexd always";    stop
start_duplexd interval:1000;  bench "duplexd interval";  stop

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0) ? "met" : "MISSED" }'; }
echo
printf '%-44s %6s %6s  %s\n' "ratio" "P=1" "P=16" "target"
row() { # label, num label, den label, test, target
    local r1 r16
    r1=$(ratio "${RPS[$2/$4/1]}" "${RPS[$3/$4/1]}")
    r16=$(ratio "${RPS[$2/$4/16]}" "${RPS[$3/$4/16]}")
    printf '%-44s %6s %6s  >= %s (%s / %s)\n' "$1" "$r1" "$r16" "$5" "$(verdict "$r1" "$5")" "$(verdict "$r16" "$5")"
}
row "duplexd always SET / redis always SET" "duplexd always" "redis always" set 1.0
row "duplexd always GET / redis always GET" "duplexd always" "redis always" get 0.8
row "duplexd interval GET / redis everysec GET" "duplexd interval" "redis everysec" get 0.8
row "duplexd interval SET / redis everysec SET" "duplexd interval" "redis everysec" set 0.8
