#!/usr/bin/env bash
# Create N XMPP accounts PREFIX1..PREFIXN (password pw-<name>) on the world's running Prosody, fast:
# one `prosodyctl shell` call runs a Lua loop of user:create() inside Prosody (mod_admin_shell over
# STATE/prosody/prosody.sock), instead of one prosodyctl process (~0.3 s) per account.
# Idempotent: accounts that exist already are left as they are (their password is not reset).
# Prosody is busy (not serving clients) while the loop runs: ~N x 1.5 ms (PBKDF2 of each password).
# Usage: bash scripts/world/bulk_accounts.sh STATE N [PREFIX]   (PREFIX default: bench)
# Prints "bulk_accounts: C created, E existed (N wanted) in S s" on stdout; exit 1 on any error.
set -euo pipefail
STATE="${1:-}"; N="${2:-}"; PREFIX="${3:-bench}"
if [ -z "$STATE" ] || [ -z "$N" ]; then echo "usage: bulk_accounts.sh STATE N [PREFIX]" >&2; exit 1; fi
case "$N" in ''|*[!0-9]*) echo "[bulk] N must be a number, got '$N'" >&2; exit 1 ;; esac
# node names: keep to characters that need no escaping in Lua strings or JIDs
case "$PREFIX" in *[!a-z0-9._-]*) echo "[bulk] PREFIX may only use a-z 0-9 . _ -, got '$PREFIX'" >&2; exit 1 ;; esac
STATE="$(cd "$STATE" && pwd)"
PCFG="$STATE/prosody/prosody.cfg.lua"
[ -f "$PCFG" ] || { echo "[bulk] no $PCFG; run up.sh first" >&2; exit 1; }
DOMAIN="$(sed -n "s/^export XMPP_DOMAIN='\(.*\)'$/\1/p" "$STATE/world.env" 2>/dev/null || true)"
DOMAIN="${DOMAIN:-xmpp.test}"
case "$DOMAIN" in *[!a-z0-9.-]*) echo "[bulk] odd XMPP_DOMAIN '$DOMAIN'" >&2; exit 1 ;; esac
t0=$(date +%s.%N)

LUA="local c,e=0,0; for i=1,$N do local u='$PREFIX'..i; local ok,err=user:create(u..'@$DOMAIN','pw-'..u); \
if ok then c=c+1 elseif err=='User exists' then e=e+1 else error(u..': '..tostring(err)) end end; \
return 'bulk_accounts: '..c..' created, '..e..' existed'"
# With the code as an argument, `prosodyctl shell` runs it once and exits with the number of errors.
if ! OUT="$(prosodyctl --config "$PCFG" shell "$LUA" 2>&1)"; then
  echo "[bulk] prosodyctl shell failed (is Prosody running with mod_admin_shell?):" >&2; echo "$OUT" >&2; exit 1
fi
LINE="$(printf '%s\n' "$OUT" | grep -o 'bulk_accounts: [0-9]* created, [0-9]* existed' || true)"
[ -n "$LINE" ] || { echo "[bulk] unexpected output:" >&2; echo "$OUT" >&2; exit 1; }
echo "$LINE ($N wanted) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
