#!/usr/bin/env bash
# Smoke test of duplexd with the real Redis tools: start a freshly built duplexd on a free
# port, run a scripted redis-cli session and CHECK every answer, run a short
# redis-benchmark and check it reports SET and GET rates, then stop the daemon with SIGTERM
# and check it exits 0 with state `stopped`.
#
# Usage: tools/server/ci/smoke.sh [path/to/duplexd]   (default: builds target/debug/duplexd)
# Needs redis-cli and redis-benchmark (Debian package redis-tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
BIN="${1:-}"
if [[ -z "$BIN" ]]; then
    cargo build -q -p duplex-server --bin duplexd
    BIN="$ROOT/target/debug/duplexd"
fi

WORK="$(mktemp -d)"
PID=""
cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then kill -9 "$PID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 17379)
"$BIN" --port "$PORT" --data "$WORK/data" --backup-dir "$WORK/backups" --archive-dir "$WORK/archive" \
    2>"$WORK/duplexd.log" &
PID=$!

cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 1 100); do
    if [[ "$(cli PING 2>/dev/null || true)" == "PONG" ]]; then break; fi
    sleep 0.1
done

FAILS=0
check() { # check "<what>" "<expected>" <command...>
    local what="$1" want="$2"
    shift 2
    local got
    got="$(cli "$@" 2>&1)"
    if [[ "$got" == "$want" ]]; then
        echo "ok   $what"
    else
        echo "FAIL $what: expected [$want], got [$got]" >&2
        FAILS=$((FAILS + 1))
    fi
}

check "PING" "PONG" PING
check "SET" "OK" SET greeting hello
check "GET" "hello" GET greeting
check "GET missing" "" GET nosuchkey
check "MSET" "OK" MSET a 1 b 2 c 3
check "MGET" "$(printf '1\n2\n\n3')" MGET a b nosuch c
check "EXISTS" "3" EXISTS a b c nosuch
check "DEL" "2" DEL a b nosuch
check "EXISTS after DEL" "0" EXISTS a b
check "SET NX on existing" "" SET c 9 NX
check "SET XX on existing" "OK" SET c 9 XX
check "SET EX" "OK" SET c 1 EX 100
ttl="$(cli TTL c 2>&1)"
if [[ "$ttl" == "100" || "$ttl" == "99" ]]; then echo "ok   TTL"; else echo "FAIL TTL: expected [100] or [99], got [$ttl]" >&2; FAILS=$((FAILS + 1)); fi
check "PERSIST" "1" PERSIST c
check "TTL after PERSIST" "-1" TTL c
check "INCR" "2" INCR c
check "INCR on a string" "ERR value is not an integer or out of range" INCR greeting
check "DBSIZE" "2" DBSIZE
check "SCAN" "$(printf '0\nc\ngreeting')" SCAN 0 COUNT 100
check "SCAN MATCH" "$(printf '0\ngreeting')" SCAN 0 MATCH 'gr*' COUNT 100
check "unknown command" "ERR unknown command 'NOSUCH', with args beginning with: 'x'" NOSUCH x
# MULTI/EXEC in one redis-cli session (commands from stdin).
got="$(printf 'MULTI\nSET t1 x\nSET t2 y\nGET t1\nEXEC\nMGET t1 t2\n' | cli)"
want="$(printf 'OK\nQUEUED\nQUEUED\nQUEUED\nOK\nOK\nx\nx\ny')"
if [[ "$got" == "$want" ]]; then echo "ok   MULTI/EXEC"; else echo "FAIL MULTI/EXEC: got [$got]" >&2; FAILS=$((FAILS + 1)); fi
info="$(cli INFO)"
for want in "# Server" "# Clients" "# Persistence" "# Replication" "# Duplex" "state:running"; do
    if grep -q "^$want" <<<"$info"; then echo "ok   INFO has $want"; else echo "FAIL INFO lacks $want" >&2; FAILS=$((FAILS + 1)); fi
done
# DUPLEX.STATE: last_lsn (the last pair) varies, so compare the first six lines only.
got="$(cli DUPLEX.STATE | head -6)"
[[ "$got" == "$(printf 'state\nrunning\nepoch\n1\nnode_id\n1')" ]] && echo "ok   DUPLEX.STATE head" || { echo "FAIL DUPLEX.STATE: [$got]" >&2; FAILS=$((FAILS + 1)); }
check "DUPLEX.CHECKPOINT" "OK" DUPLEX.CHECKPOINT

bench="$(redis-benchmark -p "$PORT" -t set,get -n 20000 -c 20 -q 2>&1 | tr '\r' '\n')"
echo "$bench" | grep -E "^(SET|GET):" || true
for t in SET GET; do
    if grep -Eq "^$t: [0-9.]+ requests per second" <<<"$bench"; then echo "ok   redis-benchmark $t"; else echo "FAIL redis-benchmark $t: $bench" >&2; FAILS=$((FAILS + 1)); fi
done

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
PID=""
if [[ $rc -eq 0 ]]; then echo "ok   SIGTERM -> exit 0"; else echo "FAIL SIGTERM -> exit $rc" >&2; FAILS=$((FAILS + 1)); fi
if grep -q '"stopped"' "$WORK/duplexd.log"; then echo "ok   state stopped logged"; else echo "FAIL no stopped state in log" >&2; FAILS=$((FAILS + 1)); fi

if ((FAILS > 0)); then
    echo "duplexd smoke test: $FAILS failure(s); daemon log:" >&2
    cat "$WORK/duplexd.log" >&2
    exit 1
fi
echo "duplexd smoke test passed"
