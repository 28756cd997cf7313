#!/usr/bin/env bash
# Install ts-mls (an independent TypeScript MLS implementation) for the interop tests.
#
#   .ci/install-ts-mls.sh     -> `npm ci` into tests/interop/ts_peer/ (from the committed package-lock.json)
#
# Idempotent and fast when already installed: a stamp holding the SHA-256 of package-lock.json is
# kept in node_modules; if it matches and ts-mls imports, nothing is downloaded.  Needs Node >= 20
# and npm, and the npm registry (nothing else from the network).  See docs/interop.md.
set -euo pipefail

PEER_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/interop/ts_peer"
STAMP="$PEER_DIR/node_modules/.crdt-mls-lock.sha256"

log() { echo "install-ts-mls: $*" >&2; }

command -v node >/dev/null 2>&1 || { log "ERROR: Node.js >= 20 is required (https://nodejs.org/)"; exit 1; }
command -v npm >/dev/null 2>&1 || { log "ERROR: npm is required"; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    log "ERROR: Node.js >= 20 is required, found $(node --version)"
    exit 1
fi

want="$(sha256sum "$PEER_DIR/package-lock.json" | cut -d' ' -f1)"
imports_ok() {
    (cd "$PEER_DIR" && node --input-type=module -e 'await import("ts-mls")' >/dev/null 2>&1)
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && imports_ok; then
    log "ts-mls already installed in $PEER_DIR/node_modules"
    exit 0
fi

log "npm ci in $PEER_DIR"
(cd "$PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
imports_ok || { log "ERROR: ts-mls does not import after npm ci"; exit 1; }
echo "$want" >"$STAMP"
log "installed $(cd "$PEER_DIR" && node -p 'require("./node_modules/ts-mls/package.json").version' 2>/dev/null || echo ts-mls)"
