#!/usr/bin/env bash
# compare.sh: switchyard side by side with NGINX and HAProxy on this machine.
#   bash benches/compare.sh        (from the repo root; knobs just below)
#   SCENARIOS="tls64 tcp" bash benches/compare.sh   TLS keep-alive and L4 TCP throughput
#   SCENARIOS=all bash benches/compare.sh           ka64 c1000 close tls64 tcp
# Scenarios: kaN / cN (N keep-alive HTTP conns, wrk), close[N] (Connection: close),
# tlsN (N keep-alive HTTPS conns: every proxy terminates TLS with the same self-signed
# ECDSA P-256 certificate, plain HTTP upstream), tcp[N] (iperf3 streaming, N parallel
# streams, default 1, through each proxy's L4 listener and directly: Gbit/s, CPU s/GB).
# Three NGINX upstreams (1 worker each, fixed ~100-byte body) serve every proxy. Each proxy
# runs ONE worker alone on PROXY_CPU (taskset); wrk (iperf3), the upstreams and this script
# share LOAD_CPU. Targets are measured interleaved (A B C A B C ..., R rounds), each started fresh
# per run: idle RSS, WARMUP s of load, then DURATION s measured: req/s, p50/p99 (wrk
# --latency), the proxy's CPU per request (utime+stime of its process tree, /proc), max
# VmRSS under load, new upstream connections (stub_status `accepts` delta), errors.
# Fairness: access logs off everywhere, NGINX upstream keepalive 1024, HAProxy http-reuse
# always, file limits raised; switchyard as operators run it (health checks, metrics on).
# Everything started here is stopped on exit (trap); traffic stays on 127.0.0.1.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
R=${R:-3}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}
SCENARIOS=${SCENARIOS:-"ka64 c1000 close"}   # see above; `all` = every scenario
TARGETS=${TARGETS:-"switchyard nginx haproxy"} # also: direct (wrk -> upstream 1, the load-side ceiling); tcp always runs direct
BUILD=${BUILD:-1}; INSTALL=${INSTALL:-1}; KEEP_WORK=${KEEP_WORK:-0}
PROXY_CPU=${PROXY_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
WRK_THREADS=${WRK_THREADS:-1}; WRK_TIMEOUT=${WRK_TIMEOUT:-2s}; CLOSE_CONNS=${CLOSE_CONNS:-64}
NBACKENDS=3; BACKEND_BASE_PORT=${BACKEND_BASE_PORT:-28081}
NGINX_PORT=${NGINX_PORT:-28090}; HAPROXY_PORT=${HAPROXY_PORT:-28091}
SWITCHYARD_PORT=${SWITCHYARD_PORT:-28092}; ADMIN_PORT=${ADMIN_PORT:-28093}
IPERF_PORT=${IPERF_PORT:-28094}               # tcp: the iperf3 server (the proxies listen on their ports above)
RESULTS=${RESULTS:-$ROOT/benches/results}   # KEEP_WORK=1 keeps the temp dir (configs, logs, wrk output)

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $R =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "R, DURATION, WARMUP: whole numbers"

# ------------------------------------------------------------ scenarios
# The one place a scenario name is interpreted: name -> "kind conns". Every other
# step dispatches on the kind (run_load: the load tool; start_target: the proxy
# config): http-ka, http-close, https-ka (wrk over TLS), tcp (iperf3; conns = streams).
scenario_spec() {
  local s=$1
  if [[ $s =~ ^(ka|c)([0-9]+)$ ]]; then echo "http-ka ${BASH_REMATCH[2]}"
  elif [[ $s =~ ^close([0-9]*)$ ]]; then echo "http-close ${BASH_REMATCH[1]:-$CLOSE_CONNS}"
  elif [[ $s =~ ^tls([0-9]+)$ ]]; then echo "https-ka ${BASH_REMATCH[1]}"
  elif [[ $s =~ ^tcp([0-9]*)$ ]]; then echo "tcp ${BASH_REMATCH[1]:-1}"
  else die "unknown scenario '$s' (kaN, cN, close, closeN, tlsN, tcp or tcpN)"; fi
}
[ "$SCENARIOS" != all ] || SCENARIOS="ka64 c1000 close tls64 tcp"
NEED_TLS=0; NEED_TCP=0
for sc in $SCENARIOS; do
  case $(scenario_spec "$sc") in https-*) NEED_TLS=1 ;; tcp*) NEED_TCP=1 ;; esac
done
for t in $TARGETS; do case $t in switchyard|nginx|haproxy|direct) ;; *) die "unknown target '$t'" ;; esac; done

# ------------------------------------------------------------ build, install
if [ "$BUILD" != 0 ]; then
  log "building switchyard (release)"
  (cd "$ROOT" && cargo build --release -p switchyard) || die "build failed (BUILD=0 uses the existing binary)"
fi
[ -x "$ROOT/target/release/switchyard" ] || die "no $ROOT/target/release/switchyard (run with BUILD=1)"
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || REV="$REV-dirty"
export PATH="$PATH:/usr/sbin:/sbin"
apt_install() { # packages: from Debian; apt-get update only when the lists are absent or the first try fails
  [ "$INSTALL" != 0 ] || { log "missing: $* (INSTALL=0)"; return 1; }
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive; log "installing from Debian packages: $*"
  compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || as_root apt-get update -qq
  as_root apt-get install -y -qq "$@" >/dev/null \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq "$@" >/dev/null; } \
    || { log "apt-get install $* failed"; return 1; }
}
missing=(); needed="nginx haproxy wrk curl taskset:util-linux python3"   # command[:package]
[ "$NEED_TLS" = 0 ] || needed="$needed openssl"
[ "$NEED_TCP" = 0 ] || needed="$needed iperf3"
for c in $needed; do command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}"); done
[ ${#missing[@]} = 0 ] || apt_install "${missing[@]}" || die "cannot install ${missing[*]}"
# NGINX's stream module (tcp): built in, or Debian's dynamic one (package libnginx-mod-stream)
NGINX_STREAM=""   # "" built in | "load_module ...;" | none: NGINX is skipped for tcp
if [ "$NEED_TCP" = 1 ] && [[ " $TARGETS " == *" nginx "* ]]; then
  nginx_v=$(nginx -V 2>&1); so=/usr/lib/nginx/modules/ngx_stream_module.so
  if [[ $nginx_v =~ --with-stream=dynamic ]]; then
    [ -f "$so" ] || apt_install libnginx-mod-stream || true
    if [ -f "$so" ]; then NGINX_STREAM="load_module $so;"; else NGINX_STREAM=none; fi
  elif ! [[ $nginx_v =~ --with-stream( |$) ]]; then NGINX_STREAM=none; fi
  [ "$NGINX_STREAM" != none ] || log "WARNING: NGINX has no stream module; NGINX is skipped for tcp"
fi

# ------------------------------------------------------------ environment
NCPU=$(getconf _NPROCESSORS_ONLN); CLK_TCK=$(getconf CLK_TCK)
[ "$NCPU" -ge 2 ] && [ "$PROXY_CPU" != "$LOAD_CPU" ] || log "WARNING: < 2 CPUs or PROXY_CPU == LOAD_CPU"
taskset -pc "$LOAD_CPU" $$ >/dev/null   # this script and what it starts: LOAD_CPU unless re-pinned
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge 4096 ] || log "WARNING: ulimit -n is $(ulimit -n); c1000 may fail"
PIDS=(); WORK=""

alive() { # pid: exists and is not a zombie (kill -0 succeeds on zombies)
  local st; read -r st 2>/dev/null <"/proc/$1/stat" || return 1; st=${st##*) }; [ "${st%% *}" != Z ]
}
tree_pids() { # pid -> pid and its descendants
  local c; alive "$1" || return 0; echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do tree_pids "$c"; done
}
stop_pid() { # pid [signal]: signal the tree, wait <= 5 s, then KILL what is left
  local pids p i left; pids=$(tree_pids "$1")
  for p in $pids; do kill -"${2:-TERM}" "$p" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    left=0; for p in $pids; do alive "$p" && left=1; done
    [ $left = 0 ] && break; sleep 0.1
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$1" 2>/dev/null || true
  local keep=(); for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
  local rc=$? p; trap - EXIT INT TERM ERR; set +e
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done
  if [ "$KEEP_WORK" = 1 ]; then log "work dir kept: $WORK"; elif [ -n "$WORK" ]; then rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
WORK=$(mktemp -d /tmp/switchyard-compare.XXXXXX); chmod 755 "$WORK"
# a private copy, so a concurrent `cargo build` cannot swap the binary between rounds
SW_BIN=$WORK/bin/switchyard; mkdir "$WORK/bin"; cp "$ROOT/target/release/switchyard" "$SW_BIN"

port_free() { # refuse busy ports: whatever listens there would answer our polls
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then die "127.0.0.1:$1 is busy; set other ports (knobs)"; fi
}
listening() { # port: a LISTEN socket on 127.0.0.1:port, from /proc/net/tcp (no connection made)
  awk -v h="$(printf '0100007F:%04X' "$1")" 'NR > 1 && $2 == h && $4 == "0A" {f = 1} END {exit !f}' /proc/net/tcp
}
wait_ready() { # port pid name [http|https|tcp]: bounded poll (15 s), fails early if the process died.
  # http(s): GET / answers 200; tcp: the port listens (a probe connection would reach the iperf3 server)
  local i code scheme=${4:-http}
  for i in $(seq 1 150); do
    alive "$2" || { log "$3 died at start"; return 1; }
    if [ "$scheme" = tcp ]; then listening "$1" && return 0
    else
      code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$scheme://127.0.0.1:$1/" || true)
      [ "$code" = 200 ] && return 0
    fi
    sleep 0.1
  done
  log "$3 not ready on 127.0.0.1:$1 ($scheme) within 15 s"; return 1
}

# ------------------------------------------------------------ upstreams
BACKEND_PORTS=(); for i in $(seq 0 $((NBACKENDS - 1))); do BACKEND_PORTS+=($((BACKEND_BASE_PORT + i))); done
BACKENDS=$(printf '127.0.0.1:%s,' "${BACKEND_PORTS[@]}"); BACKENDS=${BACKENDS%,}
for p in "${BACKEND_PORTS[@]}" "$NGINX_PORT" "$HAPROXY_PORT" "$SWITCHYARD_PORT" "$ADMIN_PORT" "$IPERF_PORT"; do port_free "$p"; done

# ------------------------------------------------------------ TLS certificate (tlsN)
# one self-signed ECDSA P-256 certificate for every proxy; HAProxy wants cert + key in one PEM
CERT=$WORK/tls/bench.crt; KEY=$WORK/tls/bench.key; CERT_PEM=$WORK/tls/bench.pem
if [ "$NEED_TLS" = 1 ]; then
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 -keyout "$KEY" -out "$CERT" \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test >"$WORK/tls/openssl.log" 2>&1 \
    || { cat "$WORK/tls/openssl.log" >&2; die "openssl req failed"; }
  cat "$CERT" "$KEY" >"$CERT_PEM"
fi

nginx_main() { # dir [stream]: 1 worker, own paths, no access log; opens the http (or stream) block
  [ "$(id -u)" = 0 ] && echo "user root;"
  [ "${2:-}" != stream ] || echo "$NGINX_STREAM"
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 10000; }
EOF
  if [ "${2:-}" = stream ]; then echo "stream {"; return 0; fi
  cat <<EOF
http {
  access_log off;
  client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
EOF
}
start_nginx() { # dir cpu -> LAST_PID
  taskset -c "$2" nginx -p "$1/" -e "$1/error.log" -c "$1/nginx.conf" -g 'daemon off;' >"$1/out.log" 2>&1 &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
for i in $(seq 1 "$NBACKENDS"); do
  d=$WORK/upstream$i; mkdir -p "$d/tmp"; port=${BACKEND_PORTS[$((i - 1))]}
  body=$(printf 'upstream-%d %0*d' "$i" 88 0)   # ~100 bytes with the newline
  { nginx_main "$d"; cat <<EOF
  server {
    listen 127.0.0.1:$port backlog=4096;
    location = /__status { stub_status; }
    location / { default_type text/plain; return 200 "$body\n"; }
  }
}
EOF
  } >"$d/nginx.conf"
  start_nginx "$d" "$LOAD_CPU"; wait_ready "$port" "$LAST_PID" "upstream$i" || die "upstream$i did not start"
done
log "upstreams: $BACKENDS (NGINX, 1 worker each, CPU $LOAD_CPU)"

upstream_counters() { # one line per upstream: "accepts requests"
  local p
  for p in "${BACKEND_PORTS[@]}"; do
    curl -s --max-time 2 "http://127.0.0.1:$p/__status" | awk 'NR==3{print $1, $3}' || echo "0 0"
  done
}

# ------------------------------------------------------------ targets
# start_target target kind -> PROXY_PID ("" for direct), TARGET_PORT, STOP_SIG.
# http-*: plain HTTP listeners; https-*: the same terminating TLS (TLS 1.2/1.3, the shared
# certificate, HTTP/1.1); tcp: L4 listeners forwarding to the iperf3 server (IPERF_PORT).
start_target() {
  local t=$1 kind=$2 d=$WORK/$1 p i=0 scheme=http
  mkdir -p "$d/tmp"; PROXY_PID=""; STOP_SIG=TERM
  case $kind in https-*) scheme=https ;; tcp) scheme=tcp ;; esac
  case $t:$scheme in
    direct:http) TARGET_PORT=${BACKEND_PORTS[0]}; return 0 ;;
    direct:tcp) TARGET_PORT=$IPERF_PORT; return 0 ;;
    direct:*) die "direct: no $kind" ;;
    nginx:tcp)
      TARGET_PORT=$NGINX_PORT; port_free "$TARGET_PORT"
      { nginx_main "$d" stream
        printf '  server {\n    listen 127.0.0.1:%s backlog=4096;\n    proxy_pass 127.0.0.1:%s;\n  }\n}\n' \
          "$TARGET_PORT" "$IPERF_PORT"
      } >"$d/nginx.conf"
      start_nginx "$d" "$PROXY_CPU"; PROXY_PID=$LAST_PID ;;
    nginx:*)
      TARGET_PORT=$NGINX_PORT; port_free "$TARGET_PORT"
      local listen="listen 127.0.0.1:$TARGET_PORT backlog=4096;"
      [ "$scheme" = http ] || listen="listen 127.0.0.1:$TARGET_PORT ssl backlog=4096;
    ssl_certificate $CERT; ssl_certificate_key $KEY; ssl_protocols TLSv1.2 TLSv1.3;"
      { nginx_main "$d"; echo "  upstream pool {"
        for p in "${BACKEND_PORTS[@]}"; do echo "    server 127.0.0.1:$p;"; done
        cat <<EOF
    keepalive 1024; keepalive_requests 100000000; keepalive_timeout 75s;
  }
  server {
    $listen
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
      } >"$d/nginx.conf"
      start_nginx "$d" "$PROXY_CPU"; PROXY_PID=$LAST_PID ;;
    haproxy:*)
      TARGET_PORT=$HAPROXY_PORT; port_free "$TARGET_PORT"
      local bind="  bind 127.0.0.1:$TARGET_PORT"
      [ "$scheme" != https ] || bind="$bind ssl crt $CERT_PEM ssl-min-ver TLSv1.2 alpn http/1.1"
      { printf '%s\n' global '  nbthread 1' '  maxconn 8000' defaults '  timeout connect 5s' \
          '  timeout client 75s' '  timeout server 75s'   # no `log` line: no logging
        if [ "$scheme" = tcp ]; then
          printf '%s\n' '  mode tcp' 'frontend fe' "$bind" '  maxconn 8000' '  default_backend pool' \
            'backend pool' "  server iperf 127.0.0.1:$IPERF_PORT"
        else
          printf '%s\n' '  mode http' '  option http-keep-alive' '  timeout http-keep-alive 75s' 'frontend fe' \
            "$bind" '  maxconn 8000' '  default_backend pool' 'backend pool' '  balance roundrobin' '  http-reuse always'
          for p in "${BACKEND_PORTS[@]}"; do i=$((i + 1)); echo "  server u$i 127.0.0.1:$p"; done
        fi
      } >"$d/haproxy.cfg"
      taskset -c "$PROXY_CPU" haproxy -db -f "$d/haproxy.cfg" >"$d/out.log" 2>&1 &
      PROXY_PID=$!; PIDS+=("$PROXY_PID") ;;
    switchyard:*)   # config written by scripts/candidate.sh: workers 1, access log off, health checks 5 s
      TARGET_PORT=$SWITCHYARD_PORT; port_free "$TARGET_PORT"; port_free "$ADMIN_PORT"
      local backends=$BACKENDS; [ "$scheme" != tcp ] || backends=127.0.0.1:$IPERF_PORT
      SWITCHYARD_BIN=$SW_BIN SWITCHYARD_CONFIG=$d/switchyard.yaml ADMIN_PORT=$ADMIN_PORT \
        CANDIDATE_PORT=$TARGET_PORT BACKENDS=$backends LISTENER_PROTOCOL=$scheme TLS_CERT=$CERT TLS_KEY=$KEY \
        taskset -c "$PROXY_CPU" bash "$ROOT/benches/scripts/candidate.sh" >"$d/out.log" 2>&1 &
      PROXY_PID=$!; PIDS+=("$PROXY_PID") ;;
  esac
  wait_ready "$TARGET_PORT" "$PROXY_PID" "$t" "$scheme" || { tail -5 "$d"/*.log >&2 || true; return 1; }
}
tls_info() { # target port: protocol and cipher that an OpenSSL client (as wrk) negotiates -> $WORK/tls/info
  local v; v=$(timeout 5 openssl s_client -connect "127.0.0.1:$2" -servername bench.test </dev/null 2>/dev/null \
    | awk '/^New, /{gsub(/,/, ""); print $2, $NF; exit}' || true)
  echo "$1 ${v:-?}" >>"$WORK/tls/info"; log "TLS with $1: ${v:-?}"
}
IPERF_PID=""
start_iperf_server() { # tcp: one iperf3 server on LOAD_CPU for the scenario's runs. Not -1 (one-off):
  # a stray connection, such as a TCP health check, would end a one-off server.
  port_free "$IPERF_PORT"
  taskset -c "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
  IPERF_PID=$!; PIDS+=("$IPERF_PID")
  wait_ready "$IPERF_PORT" "$IPERF_PID" "iperf3 server" tcp || die "iperf3 server did not start"
}

# ------------------------------------------------------------ measurement
mem_kb() { # pid field: sum over the process tree (kB)
  local p s=0 v
  for p in $(tree_pids "$1"); do
    v=$(awk -v f="$2:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || true); s=$((s + ${v:-0}))
  done; echo $s
}
cpu_ticks() { # pid: "utime+stime stime" over the process tree (all threads)
  local p s=0 k=0 v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13, $13}' || true)
    s=$((s + ${v%% *})); k=$((k + ${v##* }))
  done; echo "$s $k"
}
cpu_stat() { awk -v c="cpu$1" '$1==c{t=0; for(i=2;i<=NF;i++) t+=$i; print $2+$3+$4, $9, t}' /proc/stat; } # user+nice+sys steal total (ticks)
cpu_busy() { awk -v c="cpu$1" '$1==c{t=0; for(i=2;i<=9;i++) t+=$i; print t - $5 - $6 - $9, t}' /proc/stat; } # busy total, irqs included

# run_load kind port conns seconds outfile [sample_pid]: wrk (tcp: iperf3 client, conns =
# parallel streams) on LOAD_CPU, bounded by timeout; meanwhile samples VmRSS of
# sample_pid's tree every 0.5 s -> RSS_MAX (kB)
run_load() {
  local kind=$1 port=$2 conns=$3 secs=$4 out=$5 pid=${6:-} cmd wp i v
  cmd=(wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency)
  case $kind in
    http-ka) cmd+=("http://127.0.0.1:$port/") ;;
    http-close) cmd+=(-H 'Connection: close' "http://127.0.0.1:$port/") ;;
    https-ka) cmd+=("https://127.0.0.1:$port/") ;;
    tcp) cmd=(iperf3 -c 127.0.0.1 -p "$port" -P "$conns" -t "$secs" -J --connect-timeout 3000) ;;
    *) die "no load tool for $kind" ;;
  esac
  taskset -c "$LOAD_CPU" timeout -k 5 $((secs + 30)) "${cmd[@]}" >"$out" 2>&1 &
  wp=$!; PIDS+=("$wp"); RSS_MAX=0
  for ((i = 0; i < (secs + 40) * 2; i++)); do
    alive "$wp" || break
    if [ -n "$pid" ]; then v=$(mem_kb "$pid" VmRSS); [ "$v" -gt "$RSS_MAX" ] && RSS_MAX=$v; fi
    sleep 0.5
  done
  stop_pid "$wp"
}
parse_wrk() { # wrk output -> "rps p50_ms p99_ms requests errors"
  awk 'function ms(v, n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
         return (u == "us" ? n / 1000 : (u == "s" ? n * 1000 : (u == "m" ? n * 60000 : n))) }
    /^Requests\/sec:/ { rps = $2 }   $1 == "50%" { p50 = ms($2) }   $1 == "99%" { p99 = ms($2) }
    / requests in / { req = $1 }     /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { e += $NF }
    END { if (rps == "") print "0 - - 0", e + 0; else printf "%s %.3f %.3f %s %d\n", rps, p50, p99, req, e }' "$1"
}

parse_iperf() { # iperf3 -J output -> "gbit_s bytes errors" (what the server received)
  python3 - "$1" <<'PY'
import json, sys
try: j = json.load(open(sys.argv[1]))
except (OSError, ValueError): print("- 0 1"); sys.exit()
r = j.get("end", {}).get("sum_received", {}); b = int(r.get("bytes", 0))
print("%.3f %d %d" % (r.get("bits_per_second", 0) / 1e9, b, 1 if j.get("error") else 0) if b else "- 0 1")
PY
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$RESULTS"
MD=$RESULTS/compare-$STAMP.md; TSV=$RESULTS/compare-$STAMP.tsv
COLS="scenario target round conns rps p50_ms p99_ms requests errors cpu_pct cpu_us_per_req rss_idle_kb rss_load_kb"
COLS="$COLS hwm_kb new_upstream_conns upstream_reqs cpu0_other_pct steal_pct kind gbit_s bytes cpu_s_per_gb"
COLS="$COLS load_cpu_busy_pct sys_us_per_req sys_pct"; echo "$COLS" | tr ' ' '\t' >"$TSV"

run_one() { # scenario kind conns target round
  local sc=$1 kind=$2 conns=$3 t=$4 round=$5 f="$WORK/load.$1.$4.$5" before="" after="" c0 c1 k0 k1 w0 w1 s0 s1 l0 l1
  local idle=- load=- hwm=- loadbusy
  if ! start_target "$t" "$kind"; then
    log "SKIP $t ($sc round $round): did not start"; [ -z "$PROXY_PID" ] || stop_pid "$PROXY_PID"; return 0
  fi
  [ -z "$PROXY_PID" ] || idle=$(mem_kb "$PROXY_PID" VmRSS)
  [[ $kind != https-* || $round != 1 ]] || tls_info "$t" "$TARGET_PORT"
  [ "$WARMUP" = 0 ] || run_load "$kind" "$TARGET_PORT" "$conns" "$WARMUP" "$f.warmup"
  [ "$kind" = tcp ] || before=$(upstream_counters)
  c0=$([ -z "$PROXY_PID" ] || cpu_ticks "$PROXY_PID"); k0=${c0##* }; c0=${c0%% *}
  w0=$(date +%s.%N); s0=$(cpu_stat "$PROXY_CPU"); l0=$(cpu_busy "$LOAD_CPU")
  run_load "$kind" "$TARGET_PORT" "$conns" "$DURATION" "$f" "$PROXY_PID"
  w1=$(date +%s.%N); s1=$(cpu_stat "$PROXY_CPU"); l1=$(cpu_busy "$LOAD_CPU")
  c1=$([ -z "$PROXY_PID" ] || cpu_ticks "$PROXY_PID"); k1=${c1##* }; c1=${c1%% *}
  if [ -n "$PROXY_PID" ] && ! alive "$PROXY_PID"; then log "WARNING: $t died during the run"; c1=$c0; fi
  if [ -n "$PROXY_PID" ]; then load=$RSS_MAX; hwm=$(mem_kb "$PROXY_PID" VmHWM); fi
  [ "$kind" = tcp ] || after=$(upstream_counters)
  [ -z "$PROXY_PID" ] || stop_pid "$PROXY_PID" "$STOP_SIG"
  local rps=- p50=- p99=- req=0 err newconns=- dist=- gbit=- bytes=- cpu_pct=- cpu_us=- cpu_gb=- other steal sys_us=- sys_pct=-
  if [ "$kind" = tcp ]; then
    read -r gbit bytes err < <(parse_iperf "$f")
  else
    read -r rps p50 p99 req err < <(parse_wrk "$f")
    # deltas per upstream, minus our own status request (one new connection each)
    newconns=$(paste -d' ' <(echo "$before") <(echo "$after") | awk '{s += $3 - $1 - 1} END {print s}')
    dist=$(paste -d' ' <(echo "$before") <(echo "$after") | awk '{printf "%s%d", (NR > 1 ? ":" : ""), $4 - $2 - 1}')
  fi
  if [ -n "$PROXY_PID" ] && [ "$c1" != "$c0" ]; then   # CPU %, per request (http), seconds per GB (tcp)
    read -r cpu_pct cpu_us cpu_gb < <(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" -v n="$req" \
      -v by="$bytes" 'BEGIN { printf "%.1f %s %s\n", 100 * d / hz / (b - a),
        (n > 0 ? sprintf("%.2f", 1e6 * d / hz / n) : "-"), (by + 0 > 0 ? sprintf("%.3f", d / hz / (by / 1e9)) : "-") }')
    # the kernel's part (stime): syscalls and the loopback TCP work they trigger
    read -r sys_us sys_pct < <(awk -v d=$((c1 - c0)) -v k=$((k1 - k0)) -v hz="$CLK_TCK" -v n="$req" \
      'BEGIN { printf "%s %.1f\n", (n > 0 ? sprintf("%.2f", 1e6 * k / hz / n) : "-"), 100 * k / d }')
  fi
  # process time on PROXY_CPU not used by the proxy (other users of the host: noise), and steal
  read -r other steal < <(echo "$s0 $s1" | awk -v d=$((${c1:-0} - ${c0:-0})) '{ t = $6 - $3; if (t <= 0) t = 1
    o = $4 - $1 - d; printf "%.1f %.1f\n", 100 * (o < 0 ? 0 : o) / t, 100 * ($5 - $2) / t }')
  loadbusy=$(echo "$l0 $l1" | awk '{ t = $4 - $2; printf "%.1f", (t > 0 ? 100 * ($3 - $1) / t : 0) }')   # the load side's core
  echo "$sc $t $round $conns $rps $p50 $p99 $req $err $cpu_pct $cpu_us $idle $load $hwm $newconns $dist $other $steal" \
    "$kind $gbit $bytes $cpu_gb $loadbusy $sys_us $sys_pct" | tr ' ' '\t' >>"$TSV"
  if [ "$kind" = tcp ]; then
    log "$sc r$round $(printf '%-10s' "$t") $gbit Gbit/s err=$err cpu=$cpu_pct% ${cpu_gb}s/GB rss=$idle/${load}kB" \
      "cpu$PROXY_CPU-other=$other% cpu$LOAD_CPU-busy=$loadbusy%"
  else
    log "$sc r$round $(printf '%-10s' "$t") $rps req/s p50=${p50}ms p99=${p99}ms err=$err cpu=$cpu_pct%" \
      "${cpu_us}us/req (kernel $sys_us) rss=$idle/${load}kB upconn=$newconns ($dist) cpu$PROXY_CPU-other=$other%"
  fi
}
targets_for() { # kind -> the targets to run: no direct over TLS (the upstreams speak plain HTTP);
  # tcp always starts with direct (the reference) and skips NGINX without its stream module
  local t out=""; [ "$1" != tcp ] || out=direct
  for t in $TARGETS; do
    case $1:$t in
      https-*:direct | tcp:direct) ;;
      tcp:nginx) [ "$NGINX_STREAM" = none ] || out="$out nginx" ;;
      *) out="$out $t" ;;
    esac
  done
  echo $out
}

log "targets: $TARGETS; scenarios: $SCENARIOS; R=$R; ${DURATION}s runs after ${WARMUP}s warm-up"
log "proxy alone on CPU $PROXY_CPU; load tools + upstreams on CPU $LOAD_CPU; results: $MD"
for sc in $SCENARIOS; do
  read -r kind conns < <(scenario_spec "$sc")
  [ "$kind" != tcp ] || start_iperf_server
  for round in $(seq 1 "$R"); do
    for t in $(targets_for "$kind"); do run_one "$sc" "$kind" "$conns" "$t" "$round"; done
  done
  [ -z "$IPERF_PID" ] || { stop_pid "$IPERF_PID"; IPERF_PID=""; }
done

# ------------------------------------------------------------ report
export CMP_DATE CMP_MACHINE CMP_VERSIONS CMP_METHOD CMP_NOTES
CMP_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CMP_MACHINE="$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), nproc $NCPU, Linux $(uname -r)"
CMP_VERSIONS="switchyard $REV ($("$SW_BIN" --version 2>&1 | awk 'NR==1')), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
CMP_VERSIONS="$CMP_VERSIONS, $(haproxy -v 2>&1 | awk 'NR==1{print "HAProxy", $3}'), wrk $( (wrk -v 2>&1 || true) | awk 'NR==1{print $2}')"
[ "$NEED_TLS" = 0 ] || CMP_VERSIONS="$CMP_VERSIONS, $(openssl version | awk '{print $1, $2}')"
[ "$NEED_TCP" = 0 ] || CMP_VERSIONS="$CMP_VERSIONS, $(iperf3 -v 2>&1 | awk 'NR==1{print $1, $2}')"
CMP_METHOD="R=$R interleaved rounds; $DURATION s measured after $WARMUP s warm-up; each proxy one worker alone on CPU"
CMP_METHOD="$CMP_METHOD $PROXY_CPU; wrk -t$WRK_THREADS and $NBACKENDS NGINX upstreams (1 worker, ~100-byte body) on CPU $LOAD_CPU; loopback"
CMP_NOTES=""
[ "$NEED_TLS" = 0 ] || CMP_NOTES="- TLS (tlsN): every proxy terminates TLS 1.2/1.3 with one self-signed ECDSA P-256 certificate and
  speaks HTTP/1.1 (wrk), plain HTTP to the upstreams; negotiated (openssl s_client): $(paste -sd';' "$WORK/tls/info" 2>/dev/null | sed 's/;/; /g')"
[ "$NEED_TCP" = 0 ] || CMP_NOTES="$CMP_NOTES${CMP_NOTES:+$'\n'}- TCP (tcpN): iperf3 client and server (one server for all runs) on CPU $LOAD_CPU; the client
  connects directly or through each proxy's L4 listener (default buffers); Gbit/s as the server received it$(
  [ "$NGINX_STREAM" != none ] || echo "; NGINX skipped: no stream module")"
python3 - "$TSV" "$MD" <<'PY'
import csv, os, statistics, sys
tsv, md = sys.argv[1:3]
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
G = {}   # (scenario, target) -> runs, in first-run order
for r in csv.DictReader(open(tsv), delimiter="\t"): G.setdefault((r["scenario"], r["target"]), []).append(r)
M = {}
for k, g in G.items():
    M[k] = m = {c: med(num(r[c]) for r in g) for c in ("rps", "p50_ms", "p99_ms", "cpu_pct", "cpu_us_per_req",
                "rss_idle_kb", "rss_load_kb", "new_upstream_conns", "cpu0_other_pct", "gbit_s", "cpu_s_per_gb",
                "load_cpu_busy_pct", "sys_us_per_req", "sys_pct")}
    m["kind"] = g[0]["kind"]; v = "gbit_s" if m["kind"] == "tcp" else "rps"
    vals = [num(r[v]) or 0 for r in g]
    m["spread"] = 100 * (max(vals) - min(vals)) / 2 / m[v] if m[v] else None
    m["errors"], m["n"] = int(sum(num(r["errors"]) or 0 for r in g)), len(g)
def f(v, fmt="%.0f"): return "-" if v is None else fmt % v
def mib(v): return "-" if v is None else "%.1f" % (v / 1024)
def row(*cells): return "| " + " | ".join(str(c) for c in cells) + " |"
def sw(sc, c): return M.get((sc, "switchyard"), {}).get(c)
def ratio(sc, c, peer, who="switchyard"):
    a, b = M.get((sc, who), {}).get(c), M.get((sc, peer), {}).get(c)
    return a / b if a is not None and b else None
def met(ok): return "yes" if ok else "NO"
def goal(name, v, lim):   # lim < 0: at least -lim, else at most lim
    return row(name, f(v, "%.2fx"), ("%s %.2fx" % (">=" if lim < 0 else "<=", abs(lim))),
               "-" if v is None else met(v >= -lim if lim < 0 else v <= lim))
E = os.environ
out = ["# switchyard vs NGINX vs HAProxy (benches/compare.sh)", "", "- date: " + E["CMP_DATE"],
       "- machine: " + E["CMP_MACHINE"], "- versions: " + E["CMP_VERSIONS"], "- method: " + E["CMP_METHOD"]]
out += [E["CMP_NOTES"]] if E["CMP_NOTES"] else []
out += ["- every run: `%s`" % os.path.basename(tsv), "",
       "Medians over the rounds. `+-%`: half the min-max spread of req/s (Gbit/s for tcp). CPU: the proxy's own "
       "utime+stime (all its threads and processes); kernel: its stime part. RSS load: max VmRSS sampled every 0.5 s under load. Upstream "
       "conns: new connections the upstreams accepted during one measured run. CPU0 other: process time on the "
       "proxy's core used by anything else (host noise)."]
HTTP = {k: m for k, m in M.items() if m["kind"] != "tcp"}; TCP = {k: m for k, m in M.items() if m["kind"] == "tcp"}
if HTTP:
    out += ["", row("scenario", "target", "req/s", "+-%", "p50 ms", "p99 ms", "CPU us/req", "kernel us/req", "CPU %",
                    "RSS idle MiB", "RSS load MiB", "upstream conns", "errors", "CPU0 other %", "runs"),
            "|---|---" + "|---:" * 13 + "|"]
    out += [row(sc, t, f(m["rps"]), f(m["spread"]), f(m["p50_ms"], "%.3f"), f(m["p99_ms"], "%.3f"),
                f(m["cpu_us_per_req"], "%.2f"), f(m["sys_us_per_req"], "%.2f"), f(m["cpu_pct"]), mib(m["rss_idle_kb"]), mib(m["rss_load_kb"]),
                f(m["new_upstream_conns"]), m["errors"], f(m["cpu0_other_pct"]), m["n"]) for (sc, t), m in HTTP.items()]
if TCP:
    out += ["", "TCP streaming (iperf3): Gbit/s received; vs direct: ratio of the medians; CPU s/GB: the proxy's "
            "CPU seconds per 10^9 bytes carried; load CPU busy: the iperf3 client and server's core (irqs included).", "",
            row("scenario", "target", "Gbit/s", "+-%", "vs direct", "CPU s/GB", "kernel %", "CPU %", "RSS idle MiB",
                "RSS load MiB", "errors", "CPU0 other %", "load CPU busy %", "runs"), "|---|---" + "|---:" * 12 + "|"]
    out += [row(sc, t, f(m["gbit_s"], "%.2f"), f(m["spread"]), f(ratio(sc, "gbit_s", "direct", t), "%.2fx"),
                f(m["cpu_s_per_gb"], "%.3f"), f(m["sys_pct"]), f(m["cpu_pct"]), mib(m["rss_idle_kb"]), mib(m["rss_load_kb"]),
                m["errors"], f(m["cpu0_other_pct"]), f(m["load_cpu_busy_pct"]), m["n"]) for (sc, t), m in TCP.items()]
scens = list(dict.fromkeys(sc for sc, _ in HTTP))
pairs = [("rps", "nginx", "req/s vs NGINX"), ("cpu_us_per_req", "nginx", "CPU/req vs NGINX"),
         ("cpu_us_per_req", "haproxy", "CPU/req vs HAProxy"), ("p99_ms", "nginx", "p99 vs NGINX"),
         ("p99_ms", "haproxy", "p99 vs HAProxy"), ("rss_load_kb", "nginx", "RSS load vs NGINX")]
if scens:
    out += ["", "## switchyard / peer (ratios of the medians)", "", row("scenario", *[p[2] for p in pairs]),
            "|---" + "|---:" * len(pairs) + "|"]
    out += [row(sc, *[f(ratio(sc, c, p), "%.2fx") for c, p, _ in pairs]) for sc in scens]
goals = [("ka64", "cpu_us_per_req", "nginx", 0.75, "CPU/req"), ("ka64", "rps", "nginx", -1.3, "req/s"),
         ("c1000", "cpu_us_per_req", "haproxy", 1.0, "CPU/req"), ("c1000", "p99_ms", "nginx", 1.0, "p99"),
         ("close", "cpu_us_per_req", "nginx", 1.0, "CPU/req"), ("c1000", "rss_load_kb", "nginx", 1.0, "RSS load")]
K = {sc: m["kind"] for (sc, _), m in M.items()}; plain = [sc for sc in scens if K[sc].startswith("http-")]
if plain:
    out += ["", "## Targets of issue 5", "", row("target", "measured", "goal", "met"), "|---|---:|---:|---|"]
    out += [goal("%s: %s vs %s" % (sc, name, p), ratio(sc, c, p), lim) for sc, c, p, lim, name in goals if sc in plain]
    idle = med(sw(sc, "rss_idle_kb") for sc in plain)
    out.append(row("switchyard RSS idle", mib(idle) + " MiB", "<= 8 MiB", "-" if idle is None else met(idle <= 8192)))
    out += [row("%s: new upstream conns" % sc, f(sw(sc, "new_upstream_conns")), "tens",
                met(sw(sc, "new_upstream_conns") < 100)) for sc in plain if sw(sc, "new_upstream_conns") is not None]
tls = [sc for sc in scens if sc not in plain]; tcp = list(dict.fromkeys(sc for sc, _ in TCP))
if tls or tcp:
    out += ["", "## Targets of issue 6", "", row("target", "measured", "goal", "met"), "|---|---:|---:|---|"]
    out += [goal("%s: CPU/req vs nginx" % sc, ratio(sc, "cpu_us_per_req", "nginx"), 1.0) for sc in tls]
    out += [goal("%s: switchyard Gbit/s vs direct" % sc, ratio(sc, "gbit_s", "direct"), -0.9) for sc in tcp]
open(md, "w").write("\n".join(out) + "\n")
PY
cat "$MD"
log "table: $MD; every run: $TSV"
