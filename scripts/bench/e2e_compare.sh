#!/usr/bin/env bash
# Two builds of the bridge measured in turn by the same end-to-end bench (tests/bench_e2e.rs):
# A, B, A, B, ... so that both see the same host. This machine's speed drifts within an hour
# (docs/performance.md, "Fifth round"), so one run of each build, an hour apart, says little.
#
# Usage: bash scripts/bench/e2e.sh compare BIN_A BIN_B [ROUNDS=2]
#   BIN_A, BIN_B  interop-bridge binaries, e.g. each commit's `cargo build --release --bin
#                 interop-bridge`, copied aside (the bench runs them through BENCH_BRIDGE_BIN)
#   env BENCH_*   as for the messages mode (tests/bench_e2e.rs); BENCH_FLOWS defaults to
#                 m2x,x2m here (the baselines do not depend on the build)
#   env BENCH_DIR where each run's JSON and log go (default: a new temporary directory)
# Prints, per flow, the bridge CPU ms per message of every run of A and of B, with Synapse's CPU
# per message beside it (the same work in every run: the host's speed at that moment).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ $# -lt 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
  echo "usage: e2e.sh compare BIN_A BIN_B [ROUNDS=2]  (two executable interop-bridge builds)" >&2
  exit 1
fi
A="$(realpath "$1")"
B="$(realpath "$2")"
ROUNDS="${3:-2}"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/bench-compare.XXXXXX)}"
mkdir -p "$DIR"
export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
export BENCH_FLOWS="${BENCH_FLOWS:-m2x,x2m}"
bash "$ROOT/scripts/world/install.sh" >&2
cd "$ROOT"
echo "[compare] building tests/bench_e2e.rs (release)" >&2
TEST_BIN="$(cargo test --quiet --release --test bench_e2e --no-run --message-format=json \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "bench_e2e":
        print(m["executable"])')"
[ -x "$TEST_BIN" ] || { echo "[compare] no bench_e2e test binary" >&2; exit 1; }
echo "[compare] A=$A B=$B, $ROUNDS rounds, flows $BENCH_FLOWS, results in $DIR" >&2
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin="$A"; [ "$side" = B ] && bin="$B"
    echo "[compare] round $round, $side ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    BENCH_BRIDGE_BIN="$bin" BENCH_OUT="$DIR/$side-$round.json" \
      "$TEST_BIN" --ignored --nocapture --test-threads 1 > "$DIR/$side-$round.log" 2>&1 \
      || { echo "[compare] the bench failed: $DIR/$side-$round.log" >&2; exit 1; }
  done
done
python3 - "$DIR" "$ROUNDS" <<'PY'
import json, sys
folder, rounds = sys.argv[1], int(sys.argv[2])
runs = {(side, r): json.load(open(f"{folder}/{side}-{r}.json"))
        for side in "AB" for r in range(1, rounds + 1)}
first = runs[("A", 1)]["runs"]
def cell(side, i):
    out = []
    for r in range(1, rounds + 1):
        x = runs[(side, r)]["runs"][i]
        bad = x["lost"] + x["duplicated"] + x["out_of_order"]
        out.append(f'{x["bridge_cpu_ms_per_message"]:.2f} ({x["synapse_cpu_ms_per_message"]:.0f})'
                   + (f' !{bad}' if bad else ''))
    return " ".join(out)
print("bridge CPU ms per message of each run (Synapse CPU ms per message); !N: lost/dup/ooo")
print("| flow | mode | n | A | B |")
print("|---|---|---|---|---|")
for i, x in enumerate(first):
    print(f"| {x['flow']} | {x['mode']} | {x['messages']} | {cell('A', i)} | {cell('B', i)} |")
for side in "AB":
    peaks = [runs[(side, r)]["bridge"]["peak_rss_kib"] / 1024 for r in range(1, rounds + 1)]
    print(f"{side}: peak RSS " + " ".join(f"{p:.1f}" for p in peaks) + " MB")
PY
