#!/usr/bin/env bash
# Build Kubo (the reference IPFS implementation) once and cache the binary.
#
#   .ci/install-ipfs.sh            -> prints the path of the cached `ipfs` binary (last line of stdout)
#
# Idempotent: if the cached binary exists and runs, nothing is built.  Needs Go >= 1.26.5 and
# the Go module proxy; nothing else from the network.  See docs/ipfs.md for why the build is
# not a plain `go install github.com/ipfs/kubo/cmd/ipfs@v0.43.1` (a replace directive in
# Kubo's go.mod points to a go-libp2p fork commit that the proxy does not serve).
#
# Environment:
#   KUBO_VERSION        default v0.43.1
#   CRDT_MLS_CACHE      cache root, default ${XDG_CACHE_HOME:-$HOME/.cache}/crdt-mls
#   KUBO_FULL_PLUGINS=1 keep every preloaded plugin (default: only what a loopback test node needs)
set -euo pipefail

KUBO_VERSION="${KUBO_VERSION:-v0.43.1}"
CACHE_ROOT="${CRDT_MLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/crdt-mls}"
DEST_DIR="$CACHE_ROOT/kubo-$KUBO_VERSION"
BIN="$DEST_DIR/ipfs"
# go-libp2p release used instead of the fork commit (same go.mod, quic-go >= v0.62.0).
LIBP2P_VERSION="${KUBO_LIBP2P_VERSION:-v0.50.0}"

log() { echo "install-ipfs: $*" >&2; }

cached_ok() {
    [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1
}

if cached_ok; then
    log "using cached $("$BIN" version) at $BIN"
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || { log "ERROR: Go is required to build Kubo (https://go.dev/dl/)"; exit 1; }
mkdir -p "$DEST_DIR"

# One build at a time (parallel CI jobs on one machine share the cache).
exec 9>"$DEST_DIR/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if cached_ok; then
    log "built meanwhile by another process: $BIN"
    echo "$BIN"
    exit 0
fi

start=$(date +%s)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubo-build.XXXXXX")"
cleanup() { chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

log "fetching github.com/ipfs/kubo@$KUBO_VERSION through the Go module proxy"
cd "$WORK"  # outside any Go module, so that `go mod download` touches nothing else
SRC_DIR="$(GOFLAGS=-mod=mod go mod download -json "github.com/ipfs/kubo@$KUBO_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
[ -n "$SRC_DIR" ] && [ -d "$SRC_DIR" ] || { log "ERROR: go mod download did not give a source dir"; exit 1; }

cp -r "$SRC_DIR" "$WORK/src"
chmod -R u+w "$WORK/src"
cd "$WORK/src"

# The replace directive names github.com/lidel/go-libp2p at a commit the proxy refuses (403);
# drop it and require the go-libp2p release that carries the same change.
if grep -q '^replace github.com/libp2p/go-libp2p' go.mod; then
    log "dropping the go-libp2p fork replace; using github.com/libp2p/go-libp2p@$LIBP2P_VERSION"
    go mod edit -dropreplace=github.com/libp2p/go-libp2p -require="github.com/libp2p/go-libp2p@$LIBP2P_VERSION"
fi

# Preloaded plugins: a loopback test node needs only the default datastores (flatfs + levelds).
# Dropping the others (badger, pebble, git/dag-jose codecs, nopfs, telemetry, ...) cuts the
# compile time and keeps the node from phoning home.
if [ "${KUBO_FULL_PLUGINS:-0}" != "1" ] && [ -f plugin/loader/preload_list ]; then
    printf '%s\n' \
        "flatfs github.com/ipfs/kubo/plugin/plugins/flatfs *" \
        "levelds github.com/ipfs/kubo/plugin/plugins/levelds *" \
        > plugin/loader/preload_list
    (cd plugin/loader && IPFS_PLUGINS= bash ./preload.sh > preload.go)
    gofmt -w plugin/loader/preload.go
fi

log "building (go $(go env GOVERSION), $(nproc 2>/dev/null || echo ?) CPUs); this takes a few minutes once"
# GOGC=400: the compiler spends less time in garbage collection (uses more memory, ~1-2 GB).
GOGC="${KUBO_BUILD_GOGC:-400}" GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -tags nofuse \
    -o "$WORK/ipfs" ./cmd/ipfs

"$WORK/ipfs" version >/dev/null
mv -f "$WORK/ipfs" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
log "built $("$BIN" version) in $(( $(date +%s) - start )) s: $BIN"
echo "$BIN"
