#!/usr/bin/env bash
# Side-by-side ingest/storage/query benchmark: the same remote-write fleet
# pushed into Prometheus, VictoriaMetrics and Flightdeck in one run, with
# the shared harness (../shared/bench/run-peers.sh; see its README).
#
#   bench/peers.sh                       # 100k series x 120 samples
#   SERIES=1000000 SAMPLES=60 bench/peers.sh
#   FD_BIN=/tmp/flightdeck-main FD_NAME=main PEERS= bench/peers.sh   # another build, alone
#   QUERIES_FILE=bench/queries-promql.tsv bench/peers.sh              # the ~30 PromQL queries
#
# Flightdeck runs as the release binary on a fresh data directory, without
# host metrics (the peers collect none), and its admin token authenticates
# the pushes and queries. After ingest the harness POSTs
# /api/flightdeck/v1/metrics/flush (head -> blocks) before measuring disk.
# Results: bench/peers/results/peers-<stamp>.{md,json}; copy the ones you
# cite to bench/results/.
set -euo pipefail
# The harness reads QUERIES_FILE from the environment; make a relative
# path (from where this was started) absolute before leaving that place.
if [[ -n ${QUERIES_FILE:-} ]]; then
  QUERIES_FILE=$(realpath -e "$QUERIES_FILE")
  export QUERIES_FILE
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${FLIGHTDECK_SHARED:-$ROOT/../shared}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flightdeck-target}"
if [[ -n ${FD_BIN:-} ]]; then
  BIN=$FD_BIN
else
  cargo build --release --locked -p flightdeck
  BIN=$CARGO_TARGET_DIR/release/flightdeck
fi

WORK=$(mktemp -d)
PORT=${FD_PORT:-18464}
trap 'kill "${FD_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
cat >"$WORK/fd.toml" <<TOML
[metrics]
host_metrics = false
max_series_per_project = ${FD_MAX_SERIES:-5000000}
max_samples_per_request = 1000000
TOML
"$BIN" serve --config "$WORK/fd.toml" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
  >"$WORK/out.txt" 2>"$WORK/err.txt" &
FD_PID=$!
for _ in $(seq 600); do
  curl -fsS "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
TOKEN=$(sed -n 's/^admin token: //p' "$WORK/out.txt")
[[ -n $TOKEN ]] || { echo "flightdeck did not print its admin token"; cat "$WORK/err.txt"; exit 1; }

export BENCH_OUT=${BENCH_OUT:-$ROOT/bench/peers}
mkdir -p "$BENCH_OUT"
FD_URL="http://127.0.0.1:$PORT" FD_AUTH="Bearer $TOKEN" FD_PID=$FD_PID FD_DATA_DIR="$WORK/data" \
  FD_FLUSH_URL="http://127.0.0.1:$PORT/api/flightdeck/v1/metrics/flush" \
  "$SHARED/bench/run-peers.sh"
