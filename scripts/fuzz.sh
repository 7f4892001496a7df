#!/usr/bin/env bash
# Fuzz the XMPP stream reader (fuzz/fuzz_targets/stream.rs) for SECONDS (default 60).
#   scripts/fuzz.sh [SECONDS]
# Installs cargo-fuzz into <repo>/.world/tools (once), builds the target with RUSTC_BOOTSTRAP=1
# (cargo-fuzz needs unstable flags; only the stable toolchain is required) into fuzz/target, and
# runs it in one process (one job, one worker: no -jobs/-fork). The seed corpus fuzz/corpus/stream is read only; new inputs
# go to .world/fuzz-corpus/stream (FUZZ_CORPUS), crashes to .world/fuzz-artifacts/ (FUZZ_ARTIFACTS).
# FUZZ_SANITIZER (default none: the crate is safe Rust) may be set to address.
# Exit code: 0 if no crash was found, non-zero otherwise (or if a step failed). Works from any cwd.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_TO_RUN="${1:-60}"
TOOLS="$ROOT/.world/tools"
CORPUS="${FUZZ_CORPUS:-$ROOT/.world/fuzz-corpus/stream}"
ARTIFACTS="${FUZZ_ARTIFACTS:-$ROOT/.world/fuzz-artifacts/stream}"
SANITIZER="${FUZZ_SANITIZER:-none}"
CARGO_FUZZ_VERSION=0.13.2
say() { echo "[fuzz] $*" >&2; }

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  say "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  cargo install --locked --root "$TOOLS" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
export PATH="$TOOLS/bin:$PATH"
# cargo-fuzz passes -Z flags (sanitizer coverage, --cfg fuzzing); stable rustc takes them with this.
export RUSTC_BOOTSTRAP=1

mkdir -p "$CORPUS" "$ARTIFACTS"
say "building the stream target (sanitizer: $SANITIZER)"
cargo fuzz build --sanitizer "$SANITIZER" --debug-assertions --target-dir fuzz/target stream

say "running for ${SECONDS_TO_RUN}s: corpus $CORPUS (+ seeds fuzz/corpus/stream), artifacts $ARTIFACTS"
rc=0
cargo fuzz run --sanitizer "$SANITIZER" --debug-assertions --target-dir fuzz/target stream \
  "$CORPUS" "$ROOT/fuzz/corpus/stream" -- \
  -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
  -max_len=16384 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/" || rc=$?
if [ "$rc" != 0 ]; then
  say "CRASH or failure (exit $rc); inputs in $ARTIFACTS:"
  ls -1 "$ARTIFACTS" >&2 || true
  say "reproduce: RUSTC_BOOTSTRAP=1 PATH=$TOOLS/bin:\$PATH cargo fuzz run -s $SANITIZER -a --target-dir fuzz/target stream $ARTIFACTS/<file>"
  exit "$rc"
fi
say "no crash in ${SECONDS_TO_RUN}s; corpus now $(find "$CORPUS" -type f | wc -l) files"
