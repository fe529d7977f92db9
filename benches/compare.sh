#!/usr/bin/env bash
# compare.sh: switchyard side by side with NGINX and HAProxy on this machine.
#   bash benches/compare.sh        (from the repo root; knobs just below)
# Three NGINX upstreams (1 worker each, fixed ~100-byte body) serve every proxy. Each proxy
# runs ONE worker alone on PROXY_CPU (taskset); wrk, the upstreams and this script share
# LOAD_CPU. Targets are measured interleaved (A B C A B C ..., R rounds), each started fresh
# per run: idle RSS, WARMUP s of load, then DURATION s measured: req/s, p50/p99 (wrk
# --latency), the proxy's CPU per request (utime+stime of its process tree, /proc), max
# VmRSS under load, new upstream connections (stub_status `accepts` delta), errors.
# Fairness: access logs off everywhere, NGINX upstream keepalive 1024, HAProxy http-reuse
# always, file limits raised; switchyard as operators run it (health checks, metrics on).
# Everything started here is stopped on exit (trap); traffic stays on 127.0.0.1.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
R=${R:-3}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}
SCENARIOS=${SCENARIOS:-"ka64 c1000 close"}   # kaN / cN: N keep-alive conns; close[N]: Connection: close
TARGETS=${TARGETS:-"switchyard nginx haproxy"} # also: direct (wrk -> upstream 1, the load-side ceiling)
BUILD=${BUILD:-1}; INSTALL=${INSTALL:-1}; KEEP_WORK=${KEEP_WORK:-0}
PROXY_CPU=${PROXY_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
WRK_THREADS=${WRK_THREADS:-1}; WRK_TIMEOUT=${WRK_TIMEOUT:-2s}; CLOSE_CONNS=${CLOSE_CONNS:-64}
NBACKENDS=3; BACKEND_BASE_PORT=${BACKEND_BASE_PORT:-28081}
NGINX_PORT=${NGINX_PORT:-28090}; HAPROXY_PORT=${HAPROXY_PORT:-28091}
SWITCHYARD_PORT=${SWITCHYARD_PORT:-28092}; ADMIN_PORT=${ADMIN_PORT:-28093}
RESULTS=${RESULTS:-$ROOT/benches/results}   # KEEP_WORK=1 keeps the temp dir (configs, logs, wrk output)

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $R =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || die "R, DURATION, WARMUP: whole numbers"

# ------------------------------------------------------------ scenarios
# The one place a scenario name is interpreted: name -> "kind conns". Every other
# step dispatches on the kind (run_load: the load tool; start_target: the proxy
# config). Hooks for later: tlsN (kind https: TLS listeners + a TLS-capable load
# tool) and tcpN (kind tcp: L4 listeners + a TCP echo/load tool).
scenario_spec() {
  local s=$1
  if [[ $s =~ ^(ka|c)([0-9]+)$ ]]; then echo "http-ka ${BASH_REMATCH[2]}"
  elif [[ $s =~ ^close([0-9]*)$ ]]; then echo "http-close ${BASH_REMATCH[1]:-$CLOSE_CONNS}"
  elif [[ $s =~ ^(tls|tcp) ]]; then die "scenario '$s': TLS/TCP scenarios are not implemented yet"
  else die "unknown scenario '$s' (kaN, cN, close or closeN)"; fi
}
for sc in $SCENARIOS; do scenario_spec "$sc" >/dev/null; done
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
missing=()   # command:package
for c in nginx haproxy wrk curl taskset:util-linux python3; do command -v "${c%%:*}" >/dev/null || missing+=("${c##*:}"); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" != 0 ] || die "missing: ${missing[*]} (INSTALL=0)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive; log "installing from Debian packages: ${missing[*]}"
  # apt-get update only when the package lists are absent or the first install fails
  compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || as_root apt-get update -qq
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || die "apt-get install ${missing[*]} failed"
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
wait_ready() { # port pid name: bounded poll (15 s) for a 200, fails early if the process died
  local i code
  for i in $(seq 1 150); do
    alive "$2" || { log "$3 died at start"; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/" || true)
    [ "$code" = 200 ] && return 0; sleep 0.1
  done
  log "$3 did not answer 200 on 127.0.0.1:$1 within 15 s"; return 1
}

# ------------------------------------------------------------ upstreams
BACKEND_PORTS=(); for i in $(seq 0 $((NBACKENDS - 1))); do BACKEND_PORTS+=($((BACKEND_BASE_PORT + i))); done
BACKENDS=$(printf '127.0.0.1:%s,' "${BACKEND_PORTS[@]}"); BACKENDS=${BACKENDS%,}
for p in "${BACKEND_PORTS[@]}" "$NGINX_PORT" "$HAPROXY_PORT" "$SWITCHYARD_PORT" "$ADMIN_PORT"; do port_free "$p"; done

nginx_main() { # dir: 1 worker, own paths, no access log
  [ "$(id -u)" = 0 ] && echo "user root;"
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 10000; }
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
# Every kind is plain HTTP today; https/tcp kinds would choose other listeners here.
start_target() {
  local t=$1 kind=$2 d=$WORK/$1 p i=0
  [[ $kind == http-* ]] || die "target $t: no config for kind $kind yet"
  mkdir -p "$d/tmp"; PROXY_PID=""; STOP_SIG=TERM
  case $t in
    direct) TARGET_PORT=${BACKEND_PORTS[0]}; return 0 ;;
    nginx)
      TARGET_PORT=$NGINX_PORT; port_free "$TARGET_PORT"
      { nginx_main "$d"; echo "  upstream pool {"
        for p in "${BACKEND_PORTS[@]}"; do echo "    server 127.0.0.1:$p;"; done
        cat <<EOF
    keepalive 1024; keepalive_requests 100000000; keepalive_timeout 75s;
  }
  server {
    listen 127.0.0.1:$TARGET_PORT backlog=4096;
    location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
      } >"$d/nginx.conf"
      start_nginx "$d" "$PROXY_CPU"; PROXY_PID=$LAST_PID ;;
    haproxy)
      TARGET_PORT=$HAPROXY_PORT; port_free "$TARGET_PORT"
      { printf '%s\n' global '  nbthread 1' '  maxconn 8000' defaults '  mode http' '  option http-keep-alive' \
          '  timeout connect 5s' '  timeout client 75s' '  timeout server 75s' '  timeout http-keep-alive 75s' \
          'frontend fe' "  bind 127.0.0.1:$TARGET_PORT" '  maxconn 8000' '  default_backend pool' \
          'backend pool' '  balance roundrobin' '  http-reuse always'   # no `log` line: no logging
        for p in "${BACKEND_PORTS[@]}"; do i=$((i + 1)); echo "  server u$i 127.0.0.1:$p"; done
      } >"$d/haproxy.cfg"
      taskset -c "$PROXY_CPU" haproxy -db -f "$d/haproxy.cfg" >"$d/out.log" 2>&1 &
      PROXY_PID=$!; PIDS+=("$PROXY_PID") ;;
    switchyard)   # config written by scripts/candidate.sh: workers 1, access log off, health checks 5 s
      TARGET_PORT=$SWITCHYARD_PORT; port_free "$TARGET_PORT"; port_free "$ADMIN_PORT"
      SWITCHYARD_BIN=$SW_BIN SWITCHYARD_CONFIG=$d/switchyard.yaml ADMIN_PORT=$ADMIN_PORT \
        CANDIDATE_PORT=$TARGET_PORT BACKENDS=$BACKENDS \
        taskset -c "$PROXY_CPU" bash "$ROOT/benches/scripts/candidate.sh" >"$d/out.log" 2>&1 &
      PROXY_PID=$!; PIDS+=("$PROXY_PID") ;;
  esac
  wait_ready "$TARGET_PORT" "$PROXY_PID" "$t" || { tail -5 "$d"/*.log >&2 || true; return 1; }
}

# ------------------------------------------------------------ measurement
mem_kb() { # pid field: sum over the process tree (kB)
  local p s=0 v
  for p in $(tree_pids "$1"); do
    v=$(awk -v f="$2:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || true); s=$((s + ${v:-0}))
  done; echo $s
}
cpu_ticks() { # pid: utime+stime over the process tree (all threads)
  local p s=0 v
  for p in $(tree_pids "$1"); do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true); s=$((s + ${v:-0}))
  done; echo $s
}
cpu_stat() { awk -v c="cpu$1" '$1==c{t=0; for(i=2;i<=NF;i++) t+=$i; print $2+$3+$4, $9, t}' /proc/stat; } # user+nice+sys steal total (ticks)

# run_load kind port conns seconds outfile [sample_pid]: wrk on LOAD_CPU, bounded by
# timeout; meanwhile samples VmRSS of sample_pid's tree every 0.5 s -> RSS_MAX (kB)
run_load() {
  local kind=$1 port=$2 conns=$3 secs=$4 out=$5 pid=${6:-} args wp i v
  args=(-t"$WRK_THREADS" -c"$conns" -d"${secs}s" --timeout "$WRK_TIMEOUT" --latency)
  case $kind in http-ka) ;; http-close) args+=(-H 'Connection: close') ;; *) die "no load tool for $kind" ;; esac
  taskset -c "$LOAD_CPU" timeout -k 5 $((secs + 30)) wrk "${args[@]}" "http://127.0.0.1:$port/" >"$out" 2>&1 &
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

STAMP=$(date -u +%Y%m%dT%H%M%SZ); mkdir -p "$RESULTS"
MD=$RESULTS/compare-$STAMP.md; TSV=$RESULTS/compare-$STAMP.tsv
COLS="scenario target round conns rps p50_ms p99_ms requests errors cpu_pct cpu_us_per_req rss_idle_kb rss_load_kb"
COLS="$COLS hwm_kb new_upstream_conns upstream_reqs cpu0_other_pct steal_pct"; echo "$COLS" | tr ' ' '\t' >"$TSV"

run_one() { # scenario kind conns target round
  local sc=$1 kind=$2 conns=$3 t=$4 round=$5 f="$WORK/wrk.$1.$4.$5" before after c0 c1 w0 w1 s0 s1 idle=- load=- hwm=-
  if ! start_target "$t" "$kind"; then
    log "SKIP $t ($sc round $round): did not start"; [ -z "$PROXY_PID" ] || stop_pid "$PROXY_PID"; return 0
  fi
  [ -z "$PROXY_PID" ] || idle=$(mem_kb "$PROXY_PID" VmRSS)
  [ "$WARMUP" = 0 ] || run_load "$kind" "$TARGET_PORT" "$conns" "$WARMUP" "$f.warmup"
  before=$(upstream_counters); c0=$([ -z "$PROXY_PID" ] || cpu_ticks "$PROXY_PID")
  w0=$(date +%s.%N); s0=$(cpu_stat "$PROXY_CPU")
  run_load "$kind" "$TARGET_PORT" "$conns" "$DURATION" "$f" "$PROXY_PID"
  w1=$(date +%s.%N); s1=$(cpu_stat "$PROXY_CPU")
  c1=$([ -z "$PROXY_PID" ] || cpu_ticks "$PROXY_PID")
  if [ -n "$PROXY_PID" ] && ! alive "$PROXY_PID"; then log "WARNING: $t died during the run"; c1=$c0; fi
  if [ -n "$PROXY_PID" ]; then load=$RSS_MAX; hwm=$(mem_kb "$PROXY_PID" VmHWM); fi
  after=$(upstream_counters)
  [ -z "$PROXY_PID" ] || stop_pid "$PROXY_PID" "$STOP_SIG"
  local rps p50 p99 req err newconns dist cpu_pct=- cpu_us=- other steal
  read -r rps p50 p99 req err < <(parse_wrk "$f")
  # deltas per upstream, minus our own status request (one new connection each)
  newconns=$(paste -d' ' <(echo "$before") <(echo "$after") | awk '{s += $3 - $1 - 1} END {print s}')
  dist=$(paste -d' ' <(echo "$before") <(echo "$after") | awk '{printf "%s%d", (NR > 1 ? ":" : ""), $4 - $2 - 1}')
  if [ -n "$PROXY_PID" ] && [ "$c1" != "$c0" ]; then
    read -r cpu_pct cpu_us < <(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" -v n="$req" \
      'BEGIN { printf "%.1f %s\n", 100 * d / hz / (b - a), (n > 0 ? sprintf("%.2f", 1e6 * d / hz / n) : "-") }')
  fi
  # process time on PROXY_CPU not used by the proxy (other users of the host: noise), and steal
  read -r other steal < <(echo "$s0 $s1" | awk -v d=$((${c1:-0} - ${c0:-0})) '{ t = $6 - $3; if (t <= 0) t = 1
    o = $4 - $1 - d; printf "%.1f %.1f\n", 100 * (o < 0 ? 0 : o) / t, 100 * ($5 - $2) / t }')
  echo "$sc $t $round $conns $rps $p50 $p99 $req $err $cpu_pct $cpu_us $idle $load $hwm $newconns $dist $other $steal" \
    | tr ' ' '\t' >>"$TSV"
  log "$sc r$round $(printf '%-10s' "$t") $rps req/s p50=${p50}ms p99=${p99}ms err=$err cpu=$cpu_pct%" \
    "${cpu_us}us/req rss=$idle/${load}kB upconn=$newconns ($dist) cpu$PROXY_CPU-other=$other%"
}

log "targets: $TARGETS; scenarios: $SCENARIOS; R=$R; ${DURATION}s runs after ${WARMUP}s warm-up"
log "proxy alone on CPU $PROXY_CPU; wrk + upstreams on CPU $LOAD_CPU; results: $MD"
for sc in $SCENARIOS; do
  read -r kind conns < <(scenario_spec "$sc")
  for round in $(seq 1 "$R"); do
    for t in $TARGETS; do run_one "$sc" "$kind" "$conns" "$t" "$round"; done
  done
done

# ------------------------------------------------------------ report
export CMP_DATE CMP_MACHINE CMP_VERSIONS CMP_METHOD
CMP_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CMP_MACHINE="$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), nproc $NCPU, Linux $(uname -r)"
CMP_VERSIONS="switchyard $REV ($("$SW_BIN" --version 2>&1 | awk 'NR==1')), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
CMP_VERSIONS="$CMP_VERSIONS, $(haproxy -v 2>&1 | awk 'NR==1{print "HAProxy", $3}'), wrk $( (wrk -v 2>&1 || true) | awk 'NR==1{print $2}')"
CMP_METHOD="R=$R interleaved rounds; $DURATION s measured after $WARMUP s warm-up; each proxy one worker alone on CPU"
CMP_METHOD="$CMP_METHOD $PROXY_CPU; wrk -t$WRK_THREADS and $NBACKENDS NGINX upstreams (1 worker, ~100-byte body) on CPU $LOAD_CPU; loopback"
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
                "rss_idle_kb", "rss_load_kb", "new_upstream_conns", "cpu0_other_pct")}
    rps = [num(r["rps"]) or 0 for r in g]
    m["spread"] = 100 * (max(rps) - min(rps)) / 2 / m["rps"] if m["rps"] else None
    m["errors"], m["n"] = int(sum(num(r["errors"]) or 0 for r in g)), len(g)
def f(v, fmt="%.0f"): return "-" if v is None else fmt % v
def mib(v): return "-" if v is None else "%.1f" % (v / 1024)
def row(*cells): return "| " + " | ".join(str(c) for c in cells) + " |"
E = os.environ
out = ["# switchyard vs NGINX vs HAProxy (benches/compare.sh)", "", "- date: " + E["CMP_DATE"],
       "- machine: " + E["CMP_MACHINE"], "- versions: " + E["CMP_VERSIONS"], "- method: " + E["CMP_METHOD"],
       "- every run: `%s`" % os.path.basename(tsv), "",
       "Medians over the rounds. `+-%`: half the min-max spread of req/s. CPU: the proxy's own utime+stime "
       "(all its threads and processes). RSS load: max VmRSS sampled every 0.5 s under load. Upstream conns: "
       "new connections the upstreams accepted during one measured run. CPU0 other: process time on the "
       "proxy's core used by anything else (host noise).", "",
       row("scenario", "target", "req/s", "+-%", "p50 ms", "p99 ms", "CPU us/req", "CPU %", "RSS idle MiB",
           "RSS load MiB", "upstream conns", "errors", "CPU0 other %", "runs"), "|---|---" + "|---:" * 12 + "|"]
for (sc, t), m in M.items():
    out.append(row(sc, t, f(m["rps"]), f(m["spread"]), f(m["p50_ms"], "%.3f"), f(m["p99_ms"], "%.3f"),
        f(m["cpu_us_per_req"], "%.2f"), f(m["cpu_pct"]), mib(m["rss_idle_kb"]), mib(m["rss_load_kb"]),
        f(m["new_upstream_conns"]), m["errors"], f(m["cpu0_other_pct"]), m["n"]))
def sw(sc, c): return M.get((sc, "switchyard"), {}).get(c)
def ratio(sc, c, peer):
    a, b = sw(sc, c), M.get((sc, peer), {}).get(c)
    return a / b if a is not None and b else None
scens = list(dict.fromkeys(sc for sc, _ in M))
pairs = [("rps", "nginx", "req/s vs NGINX"), ("cpu_us_per_req", "nginx", "CPU/req vs NGINX"),
         ("cpu_us_per_req", "haproxy", "CPU/req vs HAProxy"), ("p99_ms", "nginx", "p99 vs NGINX"),
         ("p99_ms", "haproxy", "p99 vs HAProxy"), ("rss_load_kb", "nginx", "RSS load vs NGINX")]
out += ["", "## switchyard / peer (ratios of the medians)", "", row("scenario", *[p[2] for p in pairs]),
        "|---" + "|---:" * len(pairs) + "|"]
out += [row(sc, *[f(ratio(sc, c, p), "%.2fx") for c, p, _ in pairs]) for sc in scens]
goals = [("ka64", "cpu_us_per_req", "nginx", 0.75, "CPU/req"), ("ka64", "rps", "nginx", -1.3, "req/s"),
         ("c1000", "cpu_us_per_req", "haproxy", 1.0, "CPU/req"), ("c1000", "p99_ms", "nginx", 1.0, "p99"),
         ("close", "cpu_us_per_req", "nginx", 1.0, "CPU/req"), ("c1000", "rss_load_kb", "nginx", 1.0, "RSS load")]
def met(ok): return "yes" if ok else "NO"
out += ["", "## Targets of issue 5", "", row("target", "measured", "goal", "met"), "|---|---:|---:|---|"]
for sc, c, p, lim, name in goals:
    v = ratio(sc, c, p)
    out.append(row("%s: %s vs %s" % (sc, name, p), f(v, "%.2fx"), ("%s %.2fx" % (">=" if lim < 0 else "<=", abs(lim))),
                   "-" if v is None else met(v >= -lim if lim < 0 else v <= lim)))
idle = med(sw(sc, "rss_idle_kb") for sc in scens)
out.append(row("switchyard RSS idle", mib(idle) + " MiB", "<= 8 MiB", "-" if idle is None else met(idle <= 8192)))
out += [row("%s: new upstream conns" % sc, f(sw(sc, "new_upstream_conns")), "tens", met(sw(sc, "new_upstream_conns") < 100))
        for sc in scens if sw(sc, "new_upstream_conns") is not None]
open(md, "w").write("\n".join(out) + "\n")
PY
cat "$MD"
log "table: $MD; every run: $TSV"
