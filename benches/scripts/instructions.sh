#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: immune to a noisy
# host, so two builds can be compared where timed runs cannot tell them
# apart. For each binary given (default: target/release/switchyard), one
# worker runs under `valgrind --tool=callgrind` in front of 3 NGINX
# upstreams; after a warm-up its counters are zeroed, wrk runs for
# DURATION s, and the instructions counted are divided by the requests
# served. Scenarios: 64 keep-alive connections, 400 connections, a new
# connection per request. Needs nginx, wrk and valgrind (Debian packages).
#
#   bash benches/scripts/instructions.sh old/switchyard target/release/switchyard
# KEEP=dir keeps each profile as dir/<n>-<scenario>.callgrind (n: the
# binary's place in the list) for callgrind_annotate.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
DURATION=${DURATION:-5}
PORT=${PORT:-18390}
ADMIN=${ADMIN:-18391}
UP_BASE=${UP_BASE:-18381}
for tool in nginx wrk valgrind callgrind_control; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nginx wrk valgrind)" >&2; exit 2; }
done
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$here/../../target/release/switchyard")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "callgrind.*$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

backends=()
for i in 1 2 3; do
  d=$work/up$i; port=$((UP_BASE + i - 1)); mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes 1; pid $d/nginx.pid; error_log $d/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $d/tmp; proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp; uwsgi_temp_path $d/tmp; scgi_temp_path $d/tmp;
  keepalive_requests 100000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$port backlog=4096;
    location / { default_type text/plain; return 200 "upstream-$i $(printf '%088d' 0)\n"; } } }
EOF
  nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' >"$d/out.log" 2>&1 &
  pids+=($!)
  backends+=("127.0.0.1:$port")
done

ready() { # url: bounded wait (60 s: valgrind starts slowly)
  for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.3; done
  echo "not ready: $1" >&2; return 1
}

n=0
for bin in "${bins[@]}"; do
  bin=$(realpath "$bin"); n=$((n + 1))
  line="$bin:"
  for scenario in "64" "400" "64 close"; do
    set -- $scenario
    conns=$1; extra=()
    [ "${2:-}" != close ] || extra=(-H "Connection: close")
    out=$work/cg.out
    rm -f "$out"*
    cat >"$work/vg.sh" <<EOF
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file=$out "$bin" "\$@"
EOF
    chmod +x "$work/vg.sh"
    BACKENDS=$(IFS=,; echo "${backends[*]}") CANDIDATE_PORT=$PORT ADMIN_PORT=$ADMIN \
      SWITCHYARD_BIN=$work/vg.sh SWITCHYARD_CONFIG=$work/candidate.yaml \
      bash "$here/candidate.sh" >"$work/candidate.log" 2>&1 &
    cand=$!
    ready "http://127.0.0.1:$ADMIN/readyz"
    ready "http://127.0.0.1:$PORT/"
    wrk -t1 -c8 -d2s "http://127.0.0.1:$PORT/" >/dev/null
    vg=$(pgrep -f "valgrind.*$bin" | head -1)
    callgrind_control -z "$vg" >/dev/null 2>&1
    requests=$(wrk -t1 -c"$conns" -d"${DURATION}s" "${extra[@]}" "http://127.0.0.1:$PORT/" \
      | awk '/requests in/{print $1}')
    callgrind_control -d "$vg" >/dev/null 2>&1
    kill "$vg" 2>/dev/null || true
    wait "$cand" 2>/dev/null || true
    dump=$(ls -t "$out".* | head -1)
    total=$(awk '/^summary:/{print $2}' "$dump")
    if [ -n "${KEEP:-}" ]; then
      mkdir -p "$KEEP"; cp "$dump" "$KEEP/$n-${conns}${2:+-$2}.callgrind"
    fi
    line="$line ${conns}${2:+-$2}: $((total / requests)) instr/req ($requests req);"
  done
  echo "$line"
done
