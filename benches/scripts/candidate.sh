#!/usr/bin/env bash
# Runs switchyard as a benchmark candidate: one worker, access log off,
# round robin over $BACKENDS (comma-separated IP:PORT), listening on
# 127.0.0.1:$CANDIDATE_PORT. Used by compare.sh (and ../shared/bench/peers.sh).
# Optional: SWITCHYARD_BIN (binary), SWITCHYARD_CONFIG (where to write the
# config; default a fresh temp dir), ADMIN_PORT (default 19901).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${SWITCHYARD_BIN:-$here/../../target/release/switchyard}"
cfg="${SWITCHYARD_CONFIG:-$(mktemp -d)/switchyard-bench.yaml}"
{
  echo "workers: 1"
  echo "admin: { bind: \"127.0.0.1:${ADMIN_PORT:-19901}\" }"
  echo "access_log: { enabled: false }"
  echo "listeners:"
  echo "  - name: bench"
  echo "    bind: \"127.0.0.1:${CANDIDATE_PORT}\""
  echo "    max_connections: 20000"
  echo "    routes:"
  echo "      - name: all"
  echo "        forward: { target_group: pool }"
  echo "target_groups:"
  echo "  - name: pool"
  echo "    health_check: { path: /, interval: 5s, timeout: 2s }"
  echo "    targets:"
  IFS=, read -ra backends <<< "${BACKENDS}"
  for b in "${backends[@]}"; do echo "      - { address: \"$b\" }"; done
} > "$cfg"
exec "$bin" run -c "$cfg" --workers 1
