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
check "unknown command" "ERR unknown command 'NOSUCH', with args beginning with: 'x' " NOSUCH x
check "RENAME" "OK" RENAME c counter
check "RENAMENX onto an existing key" "0" RENAMENX counter greeting
check "COPY" "1" COPY counter copied DB 2
check "COPY again" "0" COPY counter copied DB 2
check "SELECT other db" "2" -n 2 GET copied
check "OBJECT ENCODING" "int" OBJECT ENCODING counter
check "TOUCH" "2" TOUCH counter greeting nosuch
check "SWAPDB refused" "ERR SWAPDB is not supported by duplexd: a swap would rewrite both databases in one unbounded write that replication could not order against concurrent writes (see docs/COMMANDS.md)" SWAPDB 0 1
check "CONFIG GET databases" "$(printf 'databases\n16')" CONFIG GET databases
check "CONFIG GET timeout" "$(printf 'timeout\n0')" CONFIG GET timeout
n="$(cli COMMAND COUNT)"
listed="$(cli COMMAND LIST | wc -l)"
if [[ "$n" == "$listed" && "$n" -gt 50 ]]; then echo "ok   COMMAND COUNT = COMMAND LIST ($n)"; else echo "FAIL COMMAND COUNT $n, COMMAND LIST $listed" >&2; FAILS=$((FAILS + 1)); fi
got="$(cli INFO keyspace | tr -d '\r')"
want="$(printf '# Keyspace\ndb0:keys=2,expires=0,avg_ttl=0\ndb2:keys=1,expires=0,avg_ttl=0')"
if [[ "$got" == "$want" ]]; then echo "ok   INFO keyspace"; else echo "FAIL INFO keyspace: got [$got]" >&2; FAILS=$((FAILS + 1)); fi
# WATCH: another client's write between WATCH and EXEC aborts it (EXEC answers nil).
got="$( (printf 'WATCH counter\nMULTI\n'; sleep 1.5; printf 'SET counter mine\nEXEC\nGET counter\n') | cli & sleep 0.8; cli SET counter theirs >/dev/null; wait)"
want="$(printf 'OK\nOK\nQUEUED\n\ntheirs')"
if [[ "$got" == "$want" ]]; then echo "ok   WATCH aborts EXEC"; else echo "FAIL WATCH: got [$got]" >&2; FAILS=$((FAILS + 1)); fi
check "SAVE (a backup)" "OK" SAVE
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

bench="$(redis-benchmark -p "$PORT" -t ping,set,get,incr,mset -n 20000 -c 20 -q 2>&1 | tr '\r' '\n')"
echo "$bench" | grep -E "^(PING_INLINE|PING_MBULK|SET|GET|INCR|MSET \(10 keys\)):" || true
if grep -qi "error" <<<"$bench"; then echo "FAIL redis-benchmark reported errors: $bench" >&2; FAILS=$((FAILS + 1)); fi
for t in PING_INLINE PING_MBULK SET GET INCR "MSET \(10 keys\)"; do
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
