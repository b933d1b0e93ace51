#!/bin/sh
# The runs behind docs/performance.md: every mode, three runs each, one JSON line per run.
#   loadtests/run_suite.sh OUT.jsonl            (about 40 minutes on 2 cores)
#   loadtests/run_suite.sh OUT.jsonl --long     (adds the 100,000-cycle churn and the 30-minute steady run)
# Run it on a quiet machine (see docs/performance.md). Each run starts its own server
# (pinned to CPU 0). With REDIS_URL set, adds the --workers 2 run (unpinned); with
# BENCH_POSTGRES_URL (an existing, migratable database), a PostgreSQL publish run.
set -u
OUT=${1:-/tmp/bench-results.jsonl}
LONG=${2:-}
PY=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.." || exit 1
bench() { echo "# $PY -m loadtests.bench $*" >&2; "$PY" -m loadtests.bench "$@" >>"$OUT"; }
R="--runs 3"
bench throughput $R --conns 100 --window 16 --duration 5
bench throughput $R --conns 100 --window 16 --duration 5 --target raw
if [ -n "${REDIS_URL:-}" ]; then
  bench throughput $R --conns 100 --window 16 --duration 5 --workers 2 --server-env "REDIS_URL=$REDIS_URL"
fi
bench latency $R --conns 10000 --rate 5000 --duration 10 --warmup 5
bench latency $R --conns 10000 --rate 5000 --duration 10 --warmup 5 --target raw
bench latency $R --conns 1000 --rate 5000 --duration 10
bench idle-memory $R --conns 10000
bench idle-memory $R --conns 10000 --target raw
bench active-memory $R --conns 1000 --per-conn-rate 1 --duration 10
bench active-memory $R --conns 1000 --per-conn-rate 1 --duration 10 --target raw
bench fanout $R --subscribers 1000 --publishers 4 --window 4 --duration 5
bench fanout $R --subscribers 1000 --publishers 4 --rate 100 --duration 5
bench fanout $R --subscribers 1000 --publishers 1 --window 4 --duration 5
bench fanout $R --subscribers 1000 --publishers 1 --rate 60 --duration 5
bench publish $R --publishers 50 --window 8 --duration 5
bench publish $R --publishers 8 --window 8 --duration 5
if [ -n "${BENCH_POSTGRES_URL:-}" ]; then
  bench publish $R --publishers 50 --window 8 --duration 5 --database-url "$BENCH_POSTGRES_URL"
fi
bench scaling $R --levels 100,1000,10000 --inflight 2000 --duration 4
bench scaling $R --levels 100,1000,10000 --inflight 2000 --duration 4 --target raw
bench churn $R --cycles 10000 --concurrency 20
bench churn --cycles 3000 --concurrency 20 --tracemalloc 1 --settle 10
bench idle-memory --conns 2000 --tracemalloc 1
if [ "$LONG" = "--long" ]; then
  bench churn --cycles 100000 --concurrency 20 --max-seconds 3600
  bench active-memory --conns 1000 --per-conn-rate 1 --warmup 5 --duration 1800
fi
