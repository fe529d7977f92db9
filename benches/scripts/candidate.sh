#!/usr/bin/env bash
# Runs switchyard as a benchmark candidate: one worker, access log off,
# round robin over $BACKENDS (comma-separated IP:PORT), listening on
# 127.0.0.1:$CANDIDATE_PORT. Used by compare.sh (and ../shared/bench/peers.sh).
# Optional: SWITCHYARD_BIN (binary), SWITCHYARD_CONFIG (where to write the
# config; default a fresh temp dir), ADMIN_PORT (default 19901),
# LISTENER_PROTOCOL: http (default) | https (TLS_CERT, TLS_KEY: PEM files;
# TLS_ALPN, default http/1.1) | tcp (BACKENDS are the targets of a tcp group,
# TCP health checks).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${SWITCHYARD_BIN:-$here/../../target/release/switchyard}"
cfg="${SWITCHYARD_CONFIG:-$(mktemp -d)/switchyard-bench.yaml}"
proto="${LISTENER_PROTOCOL:-http}"
case $proto in
  http|tcp) ;;
  https) [ -n "${TLS_CERT:-}" ] && [ -n "${TLS_KEY:-}" ] || { echo "https needs TLS_CERT and TLS_KEY" >&2; exit 2; } ;;
  *) echo "LISTENER_PROTOCOL: http, https or tcp, not '$proto'" >&2; exit 2 ;;
esac
{
  echo "workers: 1"
  echo "admin: { bind: \"127.0.0.1:${ADMIN_PORT:-19901}\" }"
  echo "access_log: { enabled: false }"
  echo "listeners:"
  echo "  - name: bench"
  echo "    bind: \"127.0.0.1:${CANDIDATE_PORT}\""
  echo "    max_connections: 20000"
  if [ "$proto" = tcp ]; then
    echo "    protocol: tcp"
    echo "    forward: { target_groups: [ { name: pool, weight: 1 } ] }"
  else
    if [ "$proto" = https ]; then
      echo "    protocol: https"
      echo "    tls:"
      echo "      certificates: [ { cert_file: \"$TLS_CERT\", key_file: \"$TLS_KEY\" } ]"
      echo "      alpn: [${TLS_ALPN:-http/1.1}]"
    fi
    echo "    routes:"
    echo "      - name: all"
    echo "        forward: { target_group: pool }"
  fi
  echo "target_groups:"
  echo "  - name: pool"
  if [ "$proto" = tcp ]; then
    echo "    protocol: tcp"
    echo "    health_check: { protocol: tcp, interval: 5s, timeout: 2s }"
  else
    echo "    health_check: { path: /, interval: 5s, timeout: 2s }"
  fi
  echo "    targets:"
  IFS=, read -ra backends <<< "${BACKENDS}"
  for b in "${backends[@]}"; do echo "      - { address: \"$b\" }"; done
} > "$cfg"
exec "$bin" run -c "$cfg" --workers 1
