#!/usr/bin/env bash
# Run all tests of interop-bridge, on a fresh machine too:
#   1. scripts/world/install.sh   Debian packages (prosody, ..., and profanity + tmux for the OMEMO
#                                 cross-checks; WORLD_WITH_PROFANITY=0 leaves them out) and the Python venv
#   2. (TEST_WORLD_SELFTEST=1)    scripts/world/selftest.sh, a check of the test world alone
#   3. cargo fmt --all --check, then cargo clippy (-D warnings) on the whole workspace with every
#      target, and on the bridge and the library alone (the library without its `wire` feature)
#   4. cargo test --workspace --locked
#                                 unit, integration and end-to-end tests of every crate; the e2e
#                                 tests start their own worlds with scripts/world/up.sh (they find the
#                                 venv through WORLD_VENV, exported here) and stop them again
# Extra arguments go to cargo test (e.g. scripts/test.sh e2e -- --nocapture).
# Exit code: non-zero if any step fails. Works from any cwd.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ts() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.1f", b-a}'; }
say() { echo "[test] $*" >&2; }
T0=$(ts)

export WORLD_VENV="${WORLD_VENV:-$ROOT/.world/venv}"
# tests/omemo_peers_world.rs drives profanity (a third OMEMO implementation), so install it by default.
export WORLD_WITH_PROFANITY="${WORLD_WITH_PROFANITY:-1}"
mkdir -p "$(dirname "$WORLD_VENV")"
WORLD_VENV="$(cd "$(dirname "$WORLD_VENV")" && pwd)/$(basename "$WORLD_VENV")"

say "1/4 installing the test world (apt + venv at $WORLD_VENV; profanity: $WORLD_WITH_PROFANITY)"
t=$(ts)
bash "$ROOT/scripts/world/install.sh"
say "world install done in $(el "$t")s"

if [ "${TEST_WORLD_SELFTEST:-0}" = "1" ]; then
  say "2/4 world selftest"
  t=$(ts)
  bash "$ROOT/scripts/world/selftest.sh"
  say "world selftest done in $(el "$t")s"
else
  say "2/4 world selftest skipped (TEST_WORLD_SELFTEST=1 runs it)"
fi

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || {
  say "cargo not found: install the Rust toolchain (rustup, see rust-version in Cargo.toml) and re-run"; exit 1; }
say "3/4 formatting and lints"
t=$(ts)
cargo fmt --all --check || {
  say "FORMATTING: cargo fmt --all --check failed; run \`cargo fmt --all\` and commit the result"; exit 1; }
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings || {
  say "LINTS: cargo clippy --workspace --all-targets -- -D warnings failed (see above)"; exit 1; }
cargo clippy -p interop-bridge -p xmpp-omemo --lib --bins --locked --quiet -- -D warnings || {
  say "LINTS: cargo clippy -p interop-bridge -p xmpp-omemo --lib --bins (no wire feature) failed (see above)"; exit 1; }
say "formatting and lints clean in $(el "$t")s"

say "4/4 cargo test --workspace --locked${*:+ $*} ($(cargo --version); setup took $(el "$T0")s)"
t=$(ts)
rc=0
cargo test --workspace --locked "$@" || rc=$?
if [ "$rc" != 0 ]; then
  say "cargo test FAILED (exit $rc) after $(el "$t")s; total $(el "$T0")s"
  exit "$rc"
fi
# On success print nothing more: cargo's own "test result:" summary lines stay the last lines.
