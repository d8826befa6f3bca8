#!/usr/bin/env bash
# Where does the server's time go during a remote write push? Starts a
# Flightdeck release binary on a fresh data directory (as bench/peers.sh
# does), pushes the shared harness' fleet with its load generator, and
# records `perf record -g` of the server for the whole push; prints the
# flat profile by symbol.
#
#   FD_BIN=/work/target/release/flightdeck bench/perf-push.sh   # 100k x 120
#   SERIES=10000 SAMPLES=60 FD_BIN=... PERF_OUT=/tmp/fd.perf bench/perf-push.sh
#
# Needs the loadgen built by a bench/peers.sh run (bench/peers/loadgen-target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${FD_BIN:?set FD_BIN to a flightdeck binary}
LOADGEN=${LOADGEN:-$ROOT/bench/peers/loadgen-target/release/loadgen}
SERIES=${SERIES:-100000}
SAMPLES=${SAMPLES:-120}
PORT=${FD_PORT:-18465}
PERF_OUT=${PERF_OUT:-$(mktemp -d)/perf.data}
WORK=$(mktemp -d)
trap 'kill "${FD_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat >"$WORK/fd.toml" <<TOML
[metrics]
host_metrics = false
max_series_per_project = 5000000
max_samples_per_request = 1000000
TOML
"$BIN" serve --config "$WORK/fd.toml" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
  >"$WORK/out.txt" 2>"$WORK/err.txt" &
FD_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
TOKEN=$(sed -n 's/^admin token: //p' "$WORK/out.txt")
START_MS=$(( ($(date +%s) - 300) * 1000 - SAMPLES * 15000 ))
perf record -g -o "$PERF_OUT" -p "$FD_PID" 2>"$WORK/perf.err" &
PERF_PID=$!
sleep 0.5
"$LOADGEN" push --url "http://127.0.0.1:$PORT/api/v1/write" --target flightdeck \
  --series "$SERIES" --samples-per-series "$SAMPLES" --interval-ms 15000 --start-ms "$START_MS" \
  --batch 10000 --shards 16 --seed 42 --concurrency 4 --auth "Bearer $TOKEN" \
  --json-out "$WORK/push.json" >/dev/null
kill -INT "$PERF_PID"; wait "$PERF_PID" || true
jq -c ".result | {samples_per_second, requests_failed, wall_seconds}" "$WORK/push.json"
echo "perf data: $PERF_OUT"
perf report -i "$PERF_OUT" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
