#!/usr/bin/env bash
# Idempotent installer for the interop-bridge test world (Synapse + Prosody + OMEMO test peers).
#   - Debian packages: prosody lua-unbound openssl curl (+ python3 python3-venv for the venv)
#       WORLD_APT=0 skips apt; WORLD_WITH_PROFANITY=1 adds profanity libsignal-protocol-c-dev tmux
#   - Python venv at $WORLD_VENV (default <repo>/.world/venv, whatever the caller's cwd) with
#     Synapse, matrix-nio[e2e], slixmpp, slixmpp-omemo, omemo/oldmemo/twomemo, pinned by
#     constraints.txt next to this script (WORLD_PIN=0: latest). pip cache: <venv dir>/pip-cache.
#   - WORLD_PYTHON picks the interpreter for the venv (default python3, needs >= 3.10).
# A second run only checks (well under a second).
# Usage: [WORLD_VENV=/path/venv] bash scripts/world/install.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${WORLD_VENV:-$ROOT/.world/venv}"
mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd)/$(basename "$VENV")"
PY="${WORLD_PYTHON:-python3}"
# keep pip's wheel cache next to the venv instead of ~/.cache/pip
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$(dirname "$VENV")/pip-cache}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
ts() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "[install] $*" >&2; }

# ---------- apt ----------
if [ "${WORLD_APT:-1}" != "0" ]; then
  PKGS=(prosody lua-unbound openssl curl python3 python3-venv)
  if [ "${WORLD_WITH_PROFANITY:-0}" = "1" ]; then PKGS+=(profanity libsignal-protocol-c-dev tmux); fi
  MISSING=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$p")
  done
  if [ "${#MISSING[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    t=$(ts)
    # Debian's prosody postinst starts a system-wide Prosody on 0.0.0.0:5222 where services can be
    # started, which then blocks our own Prosody's ports. Forbid service starts for the duration
    # of the install (policy-rc.d exit 101) unless a policy-rc.d already exists.
    POLICY_CREATED=0
    cleanup_policy() { if [ "$POLICY_CREATED" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; fi; }
    trap cleanup_policy EXIT
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d; POLICY_CREATED=1
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    cleanup_policy
    log "apt: installed ${MISSING[*]} in $(el "$t")s"
  else
    log "apt: all present (${PKGS[*]})"
  fi
fi

# ---------- venv ----------
"$PY" - <<'EOF' || { echo "[install] need Python >= 3.10 (set WORLD_PYTHON)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
if [ ! -x "$VENV/bin/python" ]; then
  t=$(ts); "$PY" -m venv "$VENV"; "$VENV/bin/pip" install -q -U pip wheel
  log "venv: created $VENV in $(el "$t")s"
fi
CONSTRAINTS=()
[ "${WORLD_PIN:-1}" = "1" ] && CONSTRAINTS=(-c "$HERE/constraints.txt")
STAMP="$VENV/.world-req.sha256"
WANT="$(cat "$HERE/requirements.txt" "$HERE/constraints.txt" | sha256sum | cut -d' ' -f1)-${WORLD_PIN:-1}"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  t=$(ts)
  # All compiled deps (Synapse's Rust part, vodozemac, xeddsa, pynacl, ...) come as manylinux wheels;
  # atomicwrites (matrix-nio[e2e]) is sdist-only but pure Python, so --only-binary=:all: would fail.
  "$VENV/bin/pip" install -q --prefer-binary -r "$HERE/requirements.txt" "${CONSTRAINTS[@]}"
  echo "$WANT" > "$STAMP"
  log "pip: installed requirements in $(el "$t")s"
  "$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
print("[install] versions:", ", ".join("%s %s" % (p, m.version(p)) for p in
      ("matrix-synapse", "matrix-nio", "vodozemac", "slixmpp", "slixmpp-omemo", "omemo", "oldmemo", "twomemo")))
EOF
else
  log "pip: requirements already installed in $VENV"
fi

if command -v prosody >/dev/null; then
  log "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo '?')"
else
  log "warning: prosody is not installed (WORLD_APT=0?); up.sh needs it unless WORLD_SERVICES=synapse"
fi
log "done. venv: $VENV"
