#!/usr/bin/env bash
# gatehouse benchmark. See bench/README.md.
#
#   bench/run.sh            req/s, p99 and RSS: gatehouse vs nginx (and HAProxy) proxying the same origin
#   bench/run.sh stream     1 GiB upload and download through gatehouse: throughput, peak RSS
#   bench/run.sh reload     p99 and errors under load while a routes file is rewritten every second
#   bench/run.sh auth       req/s and p99 of a plain route vs HS256+RBAC and RS256 JWT routes
#   bench/run.sh ratelimit  req/s and p99 of a plain route vs a limit that never refuses, with
#                           rate_limit.store memory and redis (a local redis-server), Redis ops/s
#                           and the CPU seconds of gatehouse and redis-server
#   bench/run.sh cache      req/s and p99 of cache HITs: gatehouse's memory cache vs nginx proxy_cache
#                           (on a tmpfs), gatehouse's Redis cache vs plain proxying; origin requests,
#                           Redis ops/s and CPU seconds of gatehouse, nginx and redis-server
#   bench/run.sh instr      user-space instructions and cache misses per request (valgrind's
#                           cachegrind): gatehouse vs nginx, one worker each; immune to machine noise
#   bench/run.sh idle       memory per idle keep-alive connection (HTTP/1.1 and h2c) and RSS after
#                           they closed: gatehouse vs nginx vs HAProxy, one worker each (bench/idle.sh)
#
# Environment (req/s mode):
#   REPS=3          repetitions per proxy and connection count (medians are reported)
#   DURATION=10     seconds per wrk run
#   CONNS="64 256"  connection counts. Up to 7936 (nginx's worker_rlimit_nofile 16384, two
#                   descriptors per connection); e.g. CONNS=4096 needs an open-file limit of a few
#                   thousand above it (the script raises the soft limit to the hard one, at most
#                   65536). nginx's worker_connections grow with the largest count above 3840;
#                   net.core.somaxconn is printed, not changed.
#   WARMUP=3        seconds of the warm-up run against each server (0 skips it)
#   ONLY=           gatehouse | nginx | haproxy: benchmark only that proxy (with its variant:
#                   gatehouse-1w for gatehouse, nginx-2w for nginx)
#   ORIGIN_REF=1    0 skips the one informational run straight against the origin per count
#   ONE_WORKER=1    also runs a second gatehouse with server.workers: 1 ("gatehouse-1w"), the
#                   like-for-like match for nginx's single worker, in the same rounds (0: not)
#   NGINX_PER_CORE=1  also runs a second nginx with one worker per core ("nginx-2w" on 2 cores),
#                   the like-for-like match for gatehouse's default workers, in the same rounds
#                   (0: not)
#   HAPROXY_PEER=1  also runs HAProxy (one thread, bench/haproxy-proxy.cfg.tmpl) in the same
#                   rounds, reported against gatehouse-1w and in the one-worker summary (0: not)
# Environment (stream mode):
#   STREAM_REPS=3   runs of each 1 GiB transfer (median reported)
# Environment (reload mode; REPS, DURATION and WARMUP as above, CONNS defaults to 64):
#   RELOAD_INTERVAL=1  seconds between rewrites of routes/extra.yaml during a reload run
# Environment (auth mode): REPS, DURATION, WARMUP and ORIGIN_REF as above, CONNS defaults to 64.
# Environment (ratelimit mode): REPS, DURATION, WARMUP and ORIGIN_REF as above, CONNS defaults
#   to 64.
#   REDIS_SERVER=redis-server, REDIS_CLI=redis-cli   the Redis binaries (started on a free port)
# Environment (cache mode): REPS, DURATION, WARMUP, ORIGIN_REF, REDIS_SERVER and REDIS_CLI as
#   above, CONNS defaults to 64; ONE_WORKER=1 and NGINX_PER_CORE=1 add memory-1w (gatehouse,
#   server.workers: 1) and nginx-Nw (one worker per core) as in the req/s mode.
#   CACHE_TTL=60    seconds an entry stays fresh (route cache.ttl, nginx proxy_cache_valid)
#   CACHE_TMPFS=/dev/shm  a tmpfs for nginx's proxy_cache_path
# Environment (instr mode): DURATION and CONNS as above (one run per proxy and count: the counts
#   do not depend on how busy the machine is).
# Environment (idle mode; REPS as above):
#   IDLE_CONNS=10000   idle connections per run (the open-file limit must allow them)
#   IDLE_PROTOS="h1 h2c"  protocols measured
#   IDLE_SETTLE=5   seconds after the connections closed at which RSS is read again
# All modes:
#   GATEHOUSE_WORKERS=  sets server.workers in every gatehouse config (default: unset, i.e. one
#                   worker thread per core)
#   NO_BUILD=1      do not run `cargo build --release` (use the existing binary)
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw wrk output) instead of deleting it
#
# Every server runs from a fresh `mktemp -d` directory in its own process group; all of them
# are stopped on exit, failure, Ctrl-C or SIGTERM.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
WRK=${WRK:-wrk}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/gatehouse

MODE=${1:-rps}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
if [[ $MODE == reload || $MODE == auth || $MODE == ratelimit || $MODE == cache ]]; then CONNS=${CONNS:-64}; else CONNS=${CONNS:-64 256}; fi
WARMUP=${WARMUP:-3}
ONLY=${ONLY:-}
ORIGIN_REF=${ORIGIN_REF:-1}
ONE_WORKER=${ONE_WORKER:-1}
NGINX_PER_CORE=${NGINX_PER_CORE:-1}
NGINX_NW=nginx-$(nproc)w # name of the one-worker-per-core nginx in reports
HAPROXY_PEER=${HAPROXY_PEER:-1}
STREAM_REPS=${STREAM_REPS:-3}
RELOAD_INTERVAL=${RELOAD_INTERVAL:-1}
NO_BUILD=${NO_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

# wrk threads. The machine has 2 cores shared by wrk, the proxy under test and the origin.
# One wrk thread (-t1) caps the load generator at one core and leaves the other to the proxy
# and origin; with -t2 wrk would compete for both cores with the system it measures. One
# epoll thread drives 256 keep-alive connections easily: the origin-direct reference run
# (printed with the results) shows the request rate one wrk thread reaches without a proxy,
# well above what either proxy serves, so wrk is not the bottleneck.
WRK_THREADS=1

# The exact command line, with the settings that came from the environment.
CMDLINE=""
for var in REPS DURATION CONNS WARMUP ONLY ORIGIN_REF ONE_WORKER NGINX_PER_CORE HAPROXY_PEER STREAM_REPS RELOAD_INTERVAL CACHE_TTL CACHE_TMPFS NO_BUILD KEEP_TMP IDLE_CONNS IDLE_PROTOS IDLE_SETTLE GATEHOUSE_WORKERS; do
    if [[ -n ${!var+x} ]] && printenv "$var" >/dev/null; then
        CMDLINE+="$var=$(printf '%q' "${!var}") "
    fi
done
CMDLINE+="bench/run.sh"
for arg in "$@"; do CMDLINE+=" $(printf '%q' "$arg")"; done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
source "$BENCH_DIR/lib/common.sh"

usage() {
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
}

case $MODE in
    rps | stream | reload | auth | ratelimit | cache | instr | idle) ;;
    -h | --help | help) usage; exit 0 ;;
    *) usage >&2; die "unknown mode '$MODE' (expected nothing, 'stream', 'reload', 'auth', 'ratelimit', 'cache', 'instr' or 'idle')" ;;
esac

if ! is_uint "$REPS" || ((REPS == 0)); then die "REPS must be a positive integer, got '$REPS'"; fi
if ! is_uint "$DURATION" || ((DURATION == 0)); then die "DURATION must be a positive integer, got '$DURATION'"; fi
if ! is_uint "$STREAM_REPS" || ((STREAM_REPS == 0)); then die "STREAM_REPS must be a positive integer, got '$STREAM_REPS'"; fi
is_uint "$WARMUP" || die "WARMUP must be a non-negative integer, got '$WARMUP'"
if ! [[ $RELOAD_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk -v x="$RELOAD_INTERVAL" 'BEGIN { exit !(x > 0) }'; then
    die "RELOAD_INTERVAL must be a positive number of seconds, got '$RELOAD_INTERVAL'"
fi
read -r -a CONN_LIST <<<"$CONNS"
((${#CONN_LIST[@]} > 0)) || die "CONNS is empty"
for c in "${CONN_LIST[@]}"; do
    if ! is_uint "$c" || ((c < WRK_THREADS)); then die "CONNS must be positive integers, got '$CONNS'"; fi
done
case $ONLY in
    "") PROXIES=(gatehouse nginx) ;;
    gatehouse | nginx | haproxy) PROXIES=("$ONLY") ;;
    *) die "ONLY must be 'gatehouse', 'nginx' or 'haproxy', got '$ONLY'" ;;
esac
if [[ $ONE_WORKER == 1 && ($ONLY == "" || $ONLY == gatehouse) ]]; then PROXIES+=(gatehouse-1w); fi
if [[ $NGINX_PER_CORE == 1 && ($ONLY == "" || $ONLY == nginx) ]]; then PROXIES+=("$NGINX_NW"); fi
if [[ $HAPROXY_PEER == 1 && $ONLY == "" ]]; then PROXIES+=(haproxy); fi
has_proxy() { [[ " ${PROXIES[*]} " == *" $1 "* ]]; } # NAME -> 0 if the req/s mode measures NAME

[[ -x $NGINX ]] || die "nginx not found at $NGINX (set NGINX=...)"
command -v "$WRK" >/dev/null || die "wrk not found (set WRK=...)"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"
if [[ $MODE == rps ]] && has_proxy haproxy; then
    command -v "$HAPROXY" >/dev/null || die "haproxy not found at $HAPROXY (set HAPROXY=..., or HAPROXY_PEER=0 to leave it out)"
fi
if [[ $MODE == auth ]]; then command -v openssl >/dev/null || die "openssl not found"; fi
if [[ $MODE == ratelimit || $MODE == cache ]]; then
    command -v "$REDIS_SERVER" >/dev/null || die "redis-server not found (set REDIS_SERVER=..., or apt-get install redis-server)"
    command -v "$REDIS_CLI" >/dev/null || die "redis-cli not found (set REDIS_CLI=...)"
fi
if [[ $MODE == instr ]]; then
    command -v valgrind >/dev/null || die "valgrind not found (apt-get install valgrind)"
    command -v cg_annotate >/dev/null || die "cg_annotate not found (it comes with valgrind)"
fi

# ---------------------------------------------------------------- processes and cleanup

TMP=$(mktemp -d -t gatehouse-bench.XXXXXX)
mkdir -p "$TMP/nginx-tmp"
SAMPLERS=()       # pids of background RSS samplers
REWRITER_PID=""   # reload mode: pid of the background routes-file rewriter
CACHE_DIR=""      # cache mode: nginx's proxy_cache_path, on a tmpfs outside TMP

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started "${SAMPLERS[@]}" $REWRITER_PID
    if ((rc != 0)); then tail_logs "$TMP"/*.log; fi
    if [[ $KEEP_TMP == 1 ]]; then
        log "temp dir kept: $TMP${CACHE_DIR:+ (and $CACHE_DIR)}"
    else
        rm -rf "$TMP" ${CACHE_DIR:+"$CACHE_DIR"}
    fi
    exit "$rc"
}
on_exit cleanup

# start_nginx NAME TEMPLATE PORT [KEY=VALUE...] ; sets SERVER_PID. NGINX_GLOBAL, when set,
# adds main-context directives (nginx -g).
start_nginx() {
    local name=$1 tmpl=$2 port=$3 global=()
    shift 3
    if [[ -n ${NGINX_GLOBAL:-} ]]; then global=(-g "$NGINX_GLOBAL"); fi
    # The proxy's h2c listener is only used by the idle mode; elsewhere it gets any free port.
    if grep -q @H2C_PORT@ "$tmpl" && [[ " $* " != *" H2C_PORT="* ]]; then set -- "$@" "H2C_PORT=$(free_ports 1)"; fi
    # The proxy's cache (zone and location settings): only the cache mode gives one.
    for key in CACHE_ZONE CACHE; do
        if grep -q "@$key@" "$tmpl" && [[ " $* " != *" $key="* ]]; then set -- "$@" "$key="; fi
    done
    # Its connection table: nginx's default of 8192 unless a mode needs more (WORKER_CONNECTIONS).
    if grep -q @WORKER_CONNECTIONS@ "$tmpl"; then set -- "$@" "WORKER_CONNECTIONS=${WORKER_CONNECTIONS:-8192}"; fi
    render "$tmpl" "$TMP/$name.conf" "DIR=$TMP" "PORT=$port" "USER_DIRECTIVE=$USER_DIRECTIVE" "$@"
    "$NGINX" -t -q -p "$TMP" -c "$TMP/$name.conf" ${global[@]+"${global[@]}"} >"$TMP/$name-check.log" 2>&1 ||
        { cat "$TMP/$name-check.log" >&2; die "nginx rejected $name.conf"; }
    start_server "$name" "$NGINX" -p "$TMP" -c "$TMP/$name.conf" ${global[@]+"${global[@]}"}
}

# HAProxy reserves two descriptors per connection it admits: its maxconn is half the open files.
haproxy_maxconn() { echo $((($(ulimit -n) - 20) / 2)); }

# start_haproxy NAME PORT H2C_PORT ORIGIN_PORT : HAProxy (one thread) in the foreground; sets
# SERVER_PID.
start_haproxy() {
    local name=$1 port=$2 h2c_port=$3 origin_port=$4
    render "$BENCH_DIR/haproxy-proxy.cfg.tmpl" "$TMP/$name.cfg" "DIR=$TMP" "NAME=$name" \
        "PORT=$port" "H2C_PORT=$h2c_port" "ORIGIN_PORT=$origin_port" "MAXCONN=$(haproxy_maxconn)"
    "$HAPROXY" -c -q -f "$TMP/$name.cfg" >"$TMP/$name-check.log" 2>&1 ||
        { cat "$TMP/$name-check.log" >&2; die "haproxy rejected $name.cfg"; }
    start_server "$name" "$HAPROXY" -db -f "$TMP/$name.cfg"
}

nginx_worker() { # MASTER_PID [COUNT] -> pids of its COUNT (default 1) workers, space-separated
    local w i want=${2:-1}
    for ((i = 0; i < 50; i++)); do
        w=$(pgrep -P "$1" || true)
        if [[ -n $w ]] && (($(wc -l <<<"$w") >= want)); then
            echo "${w//$'\n'/ }"
            return 0
        fi
        sleep 0.1
    done
    die "nginx master $1 does not have $want worker(s)"
}

# start_origin PORT : the origin (nginx, 1 worker, bench/nginx-origin.conf.tmpl) on 127.0.0.1:PORT;
# waits until it answers, sets URL[origin] and SERVER_PID.
start_origin() {
    log "starting the origin (nginx, 1 worker) on 127.0.0.1:$1"
    start_nginx origin "$BENCH_DIR/nginx-origin.conf.tmpl" "$1"
    URL[origin]="http://127.0.0.1:$1/"
    wait_http origin "$SERVER_PID" "${URL[origin]}" 200
}

status_kib() { # "PID..." FIELD -> value in KiB from /proc/PID/status, summed over the PIDs (0 if gone)
    local key val _ pid sum=0
    for pid in $1; do
        while read -r key val _; do
            [[ $key == "$2:" ]] && { sum=$((sum + val)); break; }
        done <"/proc/$pid/status" 2>/dev/null || true
    done
    echo "$sum"
}

# start_sampler "PID..." FILE : every 0.5 s, keeps the highest VmRSS (KiB, summed over the PIDs)
# in FILE.
start_sampler() {
    local pid=$1 file=$2
    status_kib "$pid" VmRSS >"$file"
    (
        max=0
        while kill -0 "${pid%% *}" 2>/dev/null; do
            v=$(status_kib "$pid" VmRSS)
            if ((v > max)); then max=$v; echo "$max" >"$file"; fi
            sleep 0.5
        done
    ) &
    SAMPLERS+=($!)
}
stop_samplers() {
    local pid
    for pid in "${SAMPLERS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    SAMPLERS=()
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# start_gatehouse TEMPLATE PORT [KEY=VALUE...] ; sets SERVER_PID. GH_NAME (default gatehouse)
# names its config and log files, so two instances do not share (and hot-reload) one config.
start_gatehouse() {
    local tmpl=$1 port=$2 name=${GH_NAME:-gatehouse}
    shift 2
    render "$tmpl" "$TMP/$name.yaml" "PORT=$port" "$@"
    set_workers "$TMP/$name.yaml"
    run_gatehouse "$TMP/$name.yaml"
}

workers_text() { # -> how many worker threads gatehouse runs
    if [[ -n ${GATEHOUSE_WORKERS:-} ]]; then echo "server.workers: $GATEHOUSE_WORKERS"; else echo "server.workers unset: one per core ($(nproc))"; fi
}

describe_build() {
    local rev
    rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_DIR" status --porcelain 2>/dev/null | head -n 1) ]]; then rev+="+uncommitted"; fi
    echo "$rev"
}

runs_table() { # TITLE HEADER_ROW ALIGN_ROW : every run of RUN_LINES, then a warning if wrk saw errors
    echo "$1"
    echo
    echo "$2"
    echo "$3"
    printf '%s\n' "${RUN_LINES[@]}"
    if ((ERRORS_SEEN)); then
        echo
        echo "**WARNING: wrk reported socket errors or non-2xx responses in some runs (see the table); those figures are not comparable.**"
    fi
}

publish() { # REPORT NAME : writes bench/out/NAME.md and NAME-wrk.txt, prints REPORT; exits 2 if wrk saw errors
    mkdir -p "$OUT_DIR"
    cp "$1" "$OUT_DIR/$2.md"
    cp "$TMP/wrk-all.txt" "$OUT_DIR/$2-wrk.txt"
    echo
    cat "$1"
    echo
    log "written to bench/out/$2.md (raw wrk output: bench/out/$2-wrk.txt)"
    if ((ERRORS_SEEN)); then
        log "wrk reported socket errors or non-2xx responses; exiting with status 2"
        exit 2
    fi
}

# ---------------------------------------------------------------- req/s mode

median() { # numbers... -> median (mean of the middle two for an even count)
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

field() { # LINE KEY -> value of KEY=value in a BENCH line
    local kv
    for kv in $1; do [[ $kv == "$2="* ]] && { echo "${kv#*=}"; return 0; }; done
    echo ""
}

declare -A URL WRK_HEADER RUN_RPS RUN_P99 RUN_P50 RSS_PEAK RUN_CPU LISTEN_OVERFLOWS
RUN_LINES=()
ERRORS_SEEN=0

# max_conns -> the largest connection count in CONN_LIST.
max_conns() {
    local c m=0
    for c in "${CONN_LIST[@]}"; do if ((c > m)); then m=$c; fi; done
    echo "$m"
}

# warm_up NAME... : one WARMUP-second wrk run against each NAME at the largest connection count,
# so no measured run is a server's first (WARMUP=0: none).
warm_up() {
    local name max_c
    max_c=$(max_conns)
    ((WARMUP > 0)) || return 0
    for name in "$@"; do
        log "warm-up: $name, $max_c connections, ${WARMUP}s"
        run_wrk "$name" "$max_c" "$WARMUP" warmup
    done
}

# run_wrk NAME CONNS SECONDS TAG : one wrk run against URL[NAME] (with the request header
# WRK_HEADER[NAME] if set); sets LAST_RPS / LAST_P50_US / LAST_P99_US, LAST_NON2XX (responses
# with status >= 400), LAST_SOCKET_ERRORS and LAST_ERRORS; flags errors.
run_wrk() {
    local name=$1 conns=$2 secs=$3 tag=$4 raw line errs hdr=() shown=""
    raw="$TMP/wrk-$name-c$conns-$tag.txt"
    if [[ -n ${WRK_HEADER[$name]:-} ]]; then
        hdr=(-H "${WRK_HEADER[$name]}")
        shown=" -H '${WRK_HEADER[$name]% *} <$name token>'" # the raw output does not need the token
    fi
    "$WRK" -t"$WRK_THREADS" -c"$conns" -d"${secs}s" --latency -s "$BENCH_DIR/report.lua" \
        ${hdr[@]+"${hdr[@]}"} "${URL[$name]}" >"$raw" 2>&1 || { cat "$raw" >&2; die "wrk failed against $name"; }
    {
        echo "### $name, $conns connections, $tag"
        echo "\$ $WRK -t$WRK_THREADS -c$conns -d${secs}s --latency -s bench/report.lua$shown ${URL[$name]}"
        cat "$raw"
        echo
    } >>"$TMP/wrk-all.txt"
    line=$(grep '^BENCH ' "$raw" || true)
    [[ -n $line ]] || { cat "$raw" >&2; die "no BENCH line in wrk output"; }
    LAST_REQUESTS=$(field "$line" requests)
    LAST_DURATION_S=$(field "$line" duration_s)
    LAST_RPS=$(field "$line" rps)
    LAST_P99_US=$(field "$line" p99_us)
    LAST_P50_US=$(field "$line" p50_us)
    LAST_NON2XX=$(field "$line" err_status)
    LAST_SOCKET_ERRORS=$(($(field "$line" err_connect) + $(field "$line" err_read) + $(field "$line" err_write) + $(field "$line" err_timeout)))
    errs=""
    for k in err_connect err_read err_write err_status err_timeout; do
        v=$(field "$line" "$k")
        if [[ $v != 0 ]]; then errs+="${k#err_}=$v "; fi
    done
    if grep -qE 'Socket errors|Non-2xx' "$raw"; then errs+="(wrk: $(grep -E 'Socket errors|Non-2xx' "$raw" | tr -s ' ' | tr '\n' ' '))"; fi
    LAST_ERRORS=${errs:-none}
    if [[ -n $errs ]]; then
        ERRORS_SEEN=1
        log "WARNING: $name c=$conns $tag: wrk reported errors: $errs"
    fi
}

# proc_counters "PID..." -> "user_ticks system_ticks involuntary_switches", summed over the
# threads of the PIDs.
proc_counters() {
    local u=0 s=0 n=0 t a b c pid
    for pid in $1; do for t in /proc/"$pid"/task/*; do
        read -r a b < <(awk '{ print $14, $15 }' "$t/stat" 2>/dev/null) || continue
        c=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null) || continue
        u=$((u + a)); s=$((s + b)); n=$((n + ${c:-0}))
    done; done
    echo "$u $s $n"
}

# run_cost BEFORE AFTER REQUESTS -> "USER SYSTEM PREEMPTED" for one run: the process's user and
# system CPU µs per request, and how often the scheduler took a CPU from one of its threads while
# it could still run (involuntary context switches) per 1000 requests; "- - -" without requests.
run_cost() {
    local u0 s0 n0 u1 s1 n1 hz
    read -r u0 s0 n0 <<<"$1"
    read -r u1 s1 n1 <<<"$2"
    hz=$(getconf CLK_TCK)
    awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v n="$((n1 - n0))" -v r="$3" -v hz="$hz" 'BEGIN {
        if (r <= 0) { print "- - -"; exit }
        printf "%.1f %.1f %.0f", u * 1e6 / hz / r, s * 1e6 / hz / r, n * 1000 / r }'
}

cost_columns() { # "USER SYSTEM PREEMPTED" (run_cost) -> "| CPU us/req | preempted/1k |"
    local u s n
    read -r u s n <<<"$1"
    if [[ $u == - ]]; then echo "| - | - |"; else echo "| $u + $s | $n |"; fi
}

cpu_total() { # "USER SYSTEM PREEMPTED" (run_cost) -> user + system µs per request, or -
    local u s _
    read -r u s _ <<<"$1"
    awk -v u="$u" -v s="$s" 'BEGIN { if (u == "-") print "-"; else printf "%.1f", u + s }'
}

# listen_overflows -> the kernel's count of connections dropped because a listen queue was full
# (TcpExtListenOverflows, for every socket of this network namespace); 0 if it cannot be read.
listen_overflows() {
    awk '$1 == "TcpExt:" { if (!k) { for (i = 2; i <= NF; i++) if ($i == "ListenOverflows") k = i; next } print $k + 0; found = 1; exit }
         END { if (!found) print 0 }' /proc/net/netstat 2>/dev/null || echo 0
}

fmt_ms() { awk -v us="$1" 'BEGIN { if (us == "-") print "-"; else printf "%.2f", us / 1000 }'; }
fmt_int() { awk -v x="$1" 'BEGIN { if (x == "-") print "-"; else printf "%.0f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }

# verdict for one metric: RATIO HIGHER_IS_BETTER(1|0)
verdict() {
    awk -v r="$1" -v hib="$2" 'BEGIN {
        if (r == "-") { print "-"; exit }
        good = hib ? (r >= 1.0) : (r <= 1.0)
        off = hib ? (1 - r) : (r - 1)
        if (good) print "meets target"; else if (off < 0.15) print "misses, within noise"; else print "misses"
    }'
}

# alternate_order REP NAME... : sets ORDER to the names as given for an odd REP and reversed for
# an even one (A B C, C B A, ...), so slow drift in the machine's background load does not
# always favour the same one.
alternate_order() {
    local rep=$1 i
    shift
    ORDER=("$@")
    if ((rep % 2 == 0)); then
        ORDER=()
        for ((i = $#; i >= 1; i--)); do ORDER+=("${!i}"); done
    fi
}

# measure_rounds RUN_ONE REF_COLUMNS NAME... : per connection count, one informational run
# straight against the origin (ORIGIN_REF=1; its RUN_LINES row gets REF_COLUMNS, the empty
# cells of the mode's table, before the errors), then REPS rounds over the NAMEs in alternating
# order (plain hs rs, rs hs plain, ...), calling `RUN_ONE NAME CONNS REP` for each measured run.
measure_rounds() {
    local run_one=$1 ref_columns=$2 c rep name n=0
    shift 2
    local total=$((${#CONN_LIST[@]} * REPS * $#))
    for c in "${CONN_LIST[@]}"; do
        if [[ $ORIGIN_REF == 1 ]]; then
            log "reference: origin directly, $c connections, ${DURATION}s"
            run_wrk origin "$c" "$DURATION" ref
            RUN_LINES+=("| $c | ref | origin (no gatehouse) | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") |$ref_columns $LAST_ERRORS |")
        fi
        for ((rep = 1; rep <= REPS; rep++)); do
            alternate_order "$rep" "$@"
            for name in "${ORDER[@]}"; do
                n=$((n + 1))
                log "[$n/$total] $name, $c connections, rep $rep/$REPS, ${DURATION}s"
                "$run_one" "$name" "$c" "$rep"
            done
        done
    done
}

# rps_limits MAX_CONNS : sizes nginx's connection tables for MAX_CONNS client connections (sets
# PROXY_WORKER_CONNECTIONS and ORIGIN_WORKER_CONNECTIONS); dies if the open-file limits cannot
# hold them.
rps_limits() {
    local c=$1 most
    most=$(((16384 - 512) / 2)) # nginx's worker_rlimit_nofile (both templates), 2 per connection
    if (($(ulimit -n) - 64 < most)); then most=$(($(ulimit -n) - 64)); fi # wrk: 1 per connection
    # HAProxy: each client connection, and up to 1024 connections to the origin
    if has_proxy haproxy && (($(haproxy_maxconn) - 1024 < most)); then most=$(($(haproxy_maxconn) - 1024)); fi
    # An nginx proxy holds a client and an upstream connection per request in flight, plus its
    # idle upstream pool and listeners. The 8192 the template had is kept while it is enough
    # (up to 3840 connections): nginx allocates the table up front and it counts in its RSS.
    PROXY_WORKER_CONNECTIONS=$((2 * c + 512 > 8192 ? 2 * c + 512 : 8192))
    # The origin: the busy proxy's upstream connections plus the idle ones the others keep
    # pooled (gatehouse up to 1024 per worker, nginx 512 per worker, HAProxy up to 1024).
    ORIGIN_WORKER_CONNECTIONS=$((c + 6144 > 8192 ? c + 6144 : 8192))
    ((c <= most)) || die "CONNS=$c needs more open files than nginx's worker_rlimit_nofile (16384), HAProxy's maxconn or this shell ($(ulimit -n)) allow: at most $most"
    local somaxconn
    somaxconn=$(sysctl_value net/core/somaxconn)
    if [[ $somaxconn != "?" ]] && ((somaxconn < c)); then
        log "note: net.core.somaxconn is $somaxconn, below $c connections: a burst of connects can overflow the listen queues (SYN retries)"
    fi
}

sysctl_value() { cat "/proc/sys/$1" 2>/dev/null || echo "?"; } # KEY (net/core/somaxconn) -> value

# listen_backlog URL -> the accept-queue size of the socket listening at URL's port, as the
# kernel has it (what the server asked for, capped at net.core.somaxconn), from ss; "?" without ss.
listen_backlog() {
    local port=${1##*:}
    port=${port%/}
    ss -ltnH "sport = :$port" 2>/dev/null | awk '{ print $3; found = 1; exit } END { if (!found) print "?" }'
}

# rps_run NAME CONNS REP : one measured wrk run against proxy NAME (whose pids are PID[NAME] in
# bench_rps); records its req/s, p50, p99, CPU per request and listen-queue overflows, and its
# row of the runs table.
rps_run() {
    local name=$1 c=$2 rep=$3 before overflows cost cpu
    before=$(proc_counters "${PID[$name]}")
    overflows=$(listen_overflows)
    run_wrk "$name" "$c" "$DURATION" "rep$rep"
    LISTEN_OVERFLOWS[$name:$c]=$((${LISTEN_OVERFLOWS[$name:$c]:-0} + $(listen_overflows) - overflows))
    cost=$(run_cost "$before" "$(proc_counters "${PID[$name]}")" "$LAST_REQUESTS")
    cpu=$(cpu_total "$cost")
    RUN_RPS[$name:$c]+="$LAST_RPS "
    RUN_P99[$name:$c]+="$LAST_P99_US "
    RUN_P50[$name:$c]+="$LAST_P50_US "
    if [[ $cpu != - ]]; then RUN_CPU[$name:$c]+="$cpu "; fi
    RUN_LINES+=("| $c | $rep | $name | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") $(cost_columns "$cost") $LAST_ERRORS |")
}

median_of() { # ARRAY KEY -> median of the space-separated numbers in ARRAY[KEY], or - if none
    local -n values=$1
    # shellcheck disable=SC2086 # word-splitting the space-separated list is intended
    if [[ -n ${values[$2]:-} ]]; then median ${values[$2]}; else echo -; fi
}

lower() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-") print b; else if (b == "-" || a + 0 <= b + 0) print a; else print b }'; } # A B -> the lower, ignoring -

# summary_table : per connection count, the one-worker (or one-thread) proxies side by side:
# gatehouse-1w, nginx, haproxy. req/s and CPU per request relative to nginx, p99 relative to the
# better of nginx and HAProxy, peak RSS; then the listen-queue overflows during every proxy's runs.
summary_table() {
    local c name shown=() n_rps n_cpu best rps p99 cpu rss
    for name in gatehouse-1w nginx haproxy; do if has_proxy "$name"; then shown+=("$name"); fi; done
    ((${#shown[@]} > 0)) || return 0
    echo "One worker or thread each: req/s and CPU per request (user + system, median over the runs) relative to nginx;"
    echo "p99 relative to the best peer (the lower median p99 of nginx and haproxy); peak RSS sampled during that count's runs."
    echo
    echo "| conns | proxy | req/s / nginx | p99 / best peer | CPU µs/req | CPU / nginx | peak RSS MiB |"
    echo "|---:|---|---:|---:|---:|---:|---:|"
    for c in "${CONN_LIST[@]}"; do
        n_rps=$(median_of RUN_RPS "nginx:$c")
        n_cpu=$(median_of RUN_CPU "nginx:$c")
        best=$(lower "$(median_of RUN_P99 "nginx:$c")" "$(median_of RUN_P99 "haproxy:$c")")
        for name in "${shown[@]}"; do
            rps=$(median_of RUN_RPS "$name:$c")
            p99=$(median_of RUN_P99 "$name:$c")
            cpu=$(median_of RUN_CPU "$name:$c")
            rss=$(mib "${RSS_PEAK[$name:$c]}")
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$name" "$(ratio "$rps" "$n_rps")" \
                "$(ratio "$p99" "$best")" "$cpu" "$(ratio "$cpu" "$n_cpu")" "$rss"
        done
    done
    echo
    echo "Listen-queue overflows during each proxy's measured runs (kernel counter TcpExtListenOverflows, all"
    echo "sockets on the machine; above 0: connects waited for SYN retransmits, see the backlogs in the header):"
    for c in "${CONN_LIST[@]}"; do
        printf -- '- %s connections:' "$c"
        for name in "${PROXIES[@]}"; do printf ' %s %s' "$name" "${LISTEN_OVERFLOWS[$name:$c]:-0}"; done
        echo
    done
    echo
}

bench_rps() {
    local origin_port proxy_port gh_port c rep name origin_pid proxy_pid proxy_worker gh_pid
    local origin_worker before cost
    local gh1_port nw_port ha_port ha_h2c_port
    read -r origin_port proxy_port gh_port gh1_port nw_port ha_port ha_h2c_port <<<"$(free_ports 7)"
    local max_c
    max_c=$(max_conns)
    rps_limits "$max_c"

    log "starting the origin (nginx, 1 worker, worker_connections $ORIGIN_WORKER_CONNECTIONS) on 127.0.0.1:$origin_port"
    WORKER_CONNECTIONS=$ORIGIN_WORKER_CONNECTIONS start_nginx origin "$BENCH_DIR/nginx-origin.conf.tmpl" "$origin_port"
    origin_pid=$SERVER_PID
    URL[origin]="http://127.0.0.1:$origin_port/"
    wait_http origin "$origin_pid" "${URL[origin]}" 200
    origin_worker=$(nginx_worker "$origin_pid")

    declare -A PID
    if has_proxy nginx; then
        log "starting nginx as reverse proxy (1 worker, upstream keepalive 512, worker_connections $PROXY_WORKER_CONNECTIONS) on 127.0.0.1:$proxy_port"
        WORKER_CONNECTIONS=$PROXY_WORKER_CONNECTIONS start_nginx proxy "$BENCH_DIR/nginx-proxy.conf.tmpl" "$proxy_port" "ORIGIN_PORT=$origin_port" NAME=proxy WORKERS=1
        proxy_pid=$SERVER_PID
        URL[nginx]="http://127.0.0.1:$proxy_port/"
        wait_http nginx-proxy "$proxy_pid" "${URL[nginx]}" 200
        proxy_worker=$(nginx_worker "$proxy_pid")
        PID[nginx]=$proxy_worker
    fi
    if has_proxy "$NGINX_NW"; then
        log "starting $NGINX_NW (nginx, one worker per core, upstream keepalive 512) on 127.0.0.1:$nw_port"
        WORKER_CONNECTIONS=$PROXY_WORKER_CONNECTIONS start_nginx "$NGINX_NW" "$BENCH_DIR/nginx-proxy.conf.tmpl" "$nw_port" "ORIGIN_PORT=$origin_port" "NAME=$NGINX_NW" WORKERS=auto
        URL[$NGINX_NW]="http://127.0.0.1:$nw_port/"
        wait_http "$NGINX_NW" "$SERVER_PID" "${URL[$NGINX_NW]}" 200
        PID[$NGINX_NW]=$(nginx_worker "$SERVER_PID" "$(nproc)")
    fi
    if has_proxy gatehouse; then
        log "starting gatehouse on 127.0.0.1:$gh_port"
        start_gatehouse "$BENCH_DIR/gatehouse.yaml.tmpl" "$gh_port" "ORIGIN_PORT=$origin_port"
        gh_pid=$SERVER_PID
        URL[gatehouse]="http://127.0.0.1:$gh_port/"
        wait_http gatehouse "$gh_pid" "${URL[gatehouse]}" 200
        PID[gatehouse]=$gh_pid
    fi
    if has_proxy gatehouse-1w; then
        log "starting gatehouse-1w (server.workers: 1) on 127.0.0.1:$gh1_port"
        GH_NAME=gatehouse-1w GATEHOUSE_WORKERS=1 start_gatehouse "$BENCH_DIR/gatehouse.yaml.tmpl" "$gh1_port" "ORIGIN_PORT=$origin_port"
        URL[gatehouse-1w]="http://127.0.0.1:$gh1_port/"
        wait_http gatehouse-1w "$SERVER_PID" "${URL[gatehouse-1w]}" 200
        PID[gatehouse-1w]=$SERVER_PID
    fi
    if has_proxy haproxy; then
        log "starting HAProxy (1 thread, http-reuse always) on 127.0.0.1:$ha_port"
        start_haproxy haproxy "$ha_port" "$ha_h2c_port" "$origin_port"
        URL[haproxy]="http://127.0.0.1:$ha_port/"
        wait_http haproxy "$SERVER_PID" "${URL[haproxy]}" 200
        PID[haproxy]=$SERVER_PID
    fi
    # Sanity: every proxy returns the origin's body.
    for name in "${PROXIES[@]}"; do
        curl -sS --max-time 2 "${URL[$name]}" | grep -q gatehouse-bench-origin ||
            die "$name does not return the origin's response"
    done

    declare -A RSS_IDLE
    for name in "${PROXIES[@]}"; do RSS_IDLE[$name]=$(status_kib "${PID[$name]}" VmRSS); done

    warm_up origin "${PROXIES[@]}"

    local total=$((${#CONN_LIST[@]} * REPS * ${#PROXIES[@]}))
    local n=0
    for c in "${CONN_LIST[@]}"; do
        for name in "${PROXIES[@]}"; do start_sampler "${PID[$name]}" "$TMP/rss-$name-c$c"; done
        if [[ $ORIGIN_REF == 1 ]]; then
            log "reference: origin directly, $c connections, ${DURATION}s"
            before=$(proc_counters "$origin_worker")
            run_wrk origin "$c" "$DURATION" ref
            cost=$(run_cost "$before" "$(proc_counters "$origin_worker")" "$LAST_REQUESTS")
            RUN_LINES+=("| $c | ref | origin (no proxy) | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") $(cost_columns "$cost") $LAST_ERRORS |")
        fi
        for ((rep = 1; rep <= REPS; rep++)); do
            alternate_order "$rep" "${PROXIES[@]}"
            for name in "${ORDER[@]}"; do
                n=$((n + 1))
                log "[$n/$total] $name, $c connections, rep $rep/$REPS, ${DURATION}s"
                rps_run "$name" "$c" "$rep"
                log "    $(fmt_int "$LAST_RPS") req/s, p99 $(fmt_ms "$LAST_P99_US") ms, errors: $LAST_ERRORS"
            done
        done
        stop_samplers
        for name in "${PROXIES[@]}"; do RSS_PEAK[$name:$c]=$(<"$TMP/rss-$name-c$c"); done
    done
    declare -A HWM RSS_AFTER
    for name in "${PROXIES[@]}"; do HWM[$name]=$(status_kib "${PID[$name]}" VmHWM); done
    # What each proxy still holds once the load is over: memory taken at the peak and kept, or
    # given back.
    sleep 5
    for name in "${PROXIES[@]}"; do RSS_AFTER[$name]=$(status_kib "${PID[$name]}" VmRSS); done

    # ---- report
    local report=$TMP/report.md g_rps n_rps g_p99 n_p99 r_rps r_p99 g_rss n_rss
    {
        echo "# gatehouse vs nginx: req/s, p99, RSS"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), $(workers_text)"
        if has_proxy gatehouse-1w; then
            echo "- gatehouse-1w: the same binary and config with server.workers: 1"
        fi
        echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, upstream keepalive 512 (bench/nginx-proxy.conf.tmpl)"
        if has_proxy "$NGINX_NW"; then
            echo "- $NGINX_NW: the same nginx config with worker_processes auto (one per core)"
        fi
        if has_proxy haproxy; then
            echo "- haproxy: $("$HAPROXY" -v 2>&1 | head -n 1 | awk '{ print $3 }'), nbthread 1, maxconn $(awk '$1 == "maxconn" { print $2; exit }' "$TMP/haproxy.cfg"), server maxconn 1024, http-reuse always, the same forwarding headers and X-Request-Id (bench/haproxy-proxy.cfg.tmpl)"
        fi
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response (bench/nginx-origin.conf.tmpl)"
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET /, ${DURATION}s per run, $REPS reps per proxy and connection count, order alternated per rep, ${WARMUP}s warm-up per server"
        echo "- limits: open files $(ulimit -n) (hard limit $(ulimit -Hn)); net.core.somaxconn $(sysctl_value net/core/somaxconn);" \
            "nginx worker_connections $PROXY_WORKER_CONNECTIONS (proxies), $ORIGIN_WORKER_CONNECTIONS (origin);" \
            "listen backlog (accept queue as the kernel has it):$(for name in origin "${PROXIES[@]}"; do printf ' %s %s' "$name" "$(listen_backlog "${URL[$name]}")"; done)"
        echo "- medians over the reps; ratio = gatehouse / nginx (req/s: higher is better for gatehouse; p99: lower is better);"
        echo "  on each row the \"nginx\" columns hold that row's peer (nginx, $NGINX_NW or haproxy)."
        echo "  Target: req/s ratio >= 1.00 and p99 ratio <= 1.00. On this noisy 2-core machine differences under ~15% are noise."
        echo "- RSS: peak VmRSS sampled every 0.5 s during that connection count's runs (gatehouse process; nginx worker processes, summed; HAProxy process)."
        echo
        echo "| conns | gatehouse | nginx | gatehouse req/s | nginx req/s | req/s ratio | gatehouse p99 ms | nginx p99 ms | p99 ratio | gatehouse RSS MiB | nginx RSS MiB | req/s vs target | p99 vs target |"
        echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        # Pairs compared: the default gatehouse against the one-worker nginx of the target, then
        # each like-for-like pair that was run.
        local pairs=(gatehouse:nginx) pair g ng
        if has_proxy gatehouse-1w; then pairs+=(gatehouse-1w:nginx); fi
        if has_proxy "$NGINX_NW"; then pairs+=("gatehouse:$NGINX_NW"); fi
        if has_proxy haproxy; then pairs+=(gatehouse-1w:haproxy); fi
        for c in "${CONN_LIST[@]}"; do
          for pair in "${pairs[@]}"; do
            g=${pair%%:*}; ng=${pair#*:}
            g_rps=-; n_rps=-; g_p99=-; n_p99=-; g_rss=-; n_rss=-
            # shellcheck disable=SC2086 # word-splitting the space-separated lists is intended
            if [[ -n ${RUN_RPS[$g:$c]:-} ]]; then
                g_rps=$(median ${RUN_RPS[$g:$c]}); g_p99=$(median ${RUN_P99[$g:$c]})
                g_rss=$(mib "${RSS_PEAK[$g:$c]}")
            fi
            # shellcheck disable=SC2086
            if [[ -n ${RUN_RPS[$ng:$c]:-} ]]; then
                n_rps=$(median ${RUN_RPS[$ng:$c]}); n_p99=$(median ${RUN_P99[$ng:$c]})
                n_rss=$(mib "${RSS_PEAK[$ng:$c]}")
            fi
            if [[ $g_rps != - && $n_rps != - ]]; then
                r_rps=$(ratio "$g_rps" "$n_rps"); r_p99=$(ratio "$g_p99" "$n_p99")
            else
                r_rps=-; r_p99=-
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$g" "$ng" \
                "$(fmt_int "$g_rps")" "$(fmt_int "$n_rps")" "$r_rps" \
                "$(fmt_ms "$g_p99")" "$(fmt_ms "$n_p99")" "$r_p99" \
                "$g_rss" "$n_rss" "$(verdict "$r_rps" 1)" "$(verdict "$r_p99" 0)"
          done
        done
        echo
        echo "RSS at idle (after startup), lifetime peak (VmHWM) at the end, and RSS 5 s after the last run:"
        echo
        echo "| proxy | idle RSS MiB | peak VmHWM MiB | RSS 5 s after MiB |"
        echo "|---|---:|---:|---:|"
        for name in "${PROXIES[@]}"; do
            echo "| $name$([[ $name == nginx* ]] && echo ' (workers)') | $(mib "${RSS_IDLE[$name]}") | $(mib "${HWM[$name]}") | $(mib "${RSS_AFTER[$name]}") |"
        done
        echo
        summary_table
        runs_table "All runs (\"ref\" = wrk straight against the origin, no proxy: the ceiling of this setup; CPU and preemptions are the origin's then). CPU µs/req is user + system time of the proxy process (nginx: its workers; HAProxy: its one process) per request; preempted/1k is how many times per 1000 requests the scheduler took the CPU from one of its threads while it still had work (involuntary context switches)." \
            "| conns | rep | target | req/s | p50 ms | p99 ms | CPU µs/req | preempted/1k | wrk errors |" "|---:|---|---|---:|---:|---:|---:|---:|---|"
    } >"$report"
    publish "$report" latest
}

# ---------------------------------------------------------------- stream mode

SIZE=$((1 << 30)) # 1 GiB

mibps() { awk -v b="$SIZE" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1048576 }'; }

# transfer KIND URL : one 1 GiB transfer with curl; sets T_SECS and T_CODE; checks the byte count.
transfer() {
    local kind=$1 url=$2 out resp received
    resp=$TMP/resp.txt
    : >"$resp"
    case $kind in
        download)
            out=$(curl -sS --max-time 600 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url")
            ;;
        upload-chunked)
            # Unknown length from a pipe: curl sends Transfer-Encoding: chunked.
            # "Expect:" off so curl does not wait for 100 Continue (we measure throughput only).
            out=$(head -c "$SIZE" /dev/zero |
                curl -sS --max-time 600 -T - -H 'Expect:' -o "$resp" -w '%{http_code} %{size_upload} %{time_total}' "$url")
            ;;
        upload-length)
            out=$(curl -sS --max-time 600 -T "$TMP/files/big.bin" -H 'Expect:' -o "$resp" \
                -w '%{http_code} %{size_upload} %{time_total}' "$url")
            ;;
    esac
    read -r T_CODE T_BYTES T_SECS <<<"$out"
    [[ $T_CODE == 200 ]] || { cat "$resp" >&2; die "$kind $url: HTTP $T_CODE"; }
    if [[ $kind == upload-* ]]; then
        # The sink's count of body bytes is authoritative (curl's size_upload includes the
        # chunked framing).
        received=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["received"])' "$resp")
        [[ $received == "$SIZE" ]] || die "$kind $url: the sink received $received bytes, expected $SIZE"
        T_BYTES=$received
    fi
    [[ $T_BYTES == "$SIZE" ]] || die "$kind $url: $T_BYTES bytes moved, expected $SIZE"
}

bench_stream() {
    local files_port sink_port gh_port files_pid sink_pid gh_pid idle hwm kind via url rows=() limit_kib=$((64 * 1024))
    read -r files_port sink_port gh_port <<<"$(free_ports 3)"
    mkdir -p "$TMP/files"
    truncate -s "$SIZE" "$TMP/files/big.bin" # sparse: no disk space, read as zeros

    log "starting the download origin (nginx serving a 1 GiB sparse file) on 127.0.0.1:$files_port"
    start_nginx files "$BENCH_DIR/nginx-files.conf.tmpl" "$files_port"
    files_pid=$SERVER_PID
    wait_http files "$files_pid" "http://127.0.0.1:$files_port/missing" any

    log "starting the upload sink (bench/sink.py) on 127.0.0.1:$sink_port"
    start_server sink python3 "$BENCH_DIR/sink.py" "$sink_port"
    sink_pid=$SERVER_PID
    wait_http sink "$sink_pid" "http://127.0.0.1:$sink_port/" 200

    log "starting gatehouse (max_request_body: 2GiB) on 127.0.0.1:$gh_port"
    start_gatehouse "$BENCH_DIR/gatehouse-stream.yaml.tmpl" "$gh_port" \
        "SINK_PORT=$sink_port" "FILES_PORT=$files_port"
    gh_pid=$SERVER_PID
    wait_http gatehouse "$gh_pid" "http://127.0.0.1:$gh_port/upload" 200
    idle=$(status_kib "$gh_pid" VmRSS)
    start_sampler "$gh_pid" "$TMP/rss-stream"

    local r secs speeds
    for kind in upload-chunked upload-length download; do
        for via in direct gatehouse; do
            if [[ $kind == download ]]; then
                if [[ $via == direct ]]; then url="http://127.0.0.1:$files_port/big.bin"; else url="http://127.0.0.1:$gh_port/big.bin"; fi
            else
                if [[ $via == direct ]]; then url="http://127.0.0.1:$sink_port/upload"; else url="http://127.0.0.1:$gh_port/upload"; fi
            fi
            secs=()
            speeds=""
            for ((r = 1; r <= STREAM_REPS; r++)); do
                log "$kind, $via: 1 GiB, run $r/$STREAM_REPS"
                transfer "$kind" "$url"
                kill -0 "$gh_pid" 2>/dev/null || die "gatehouse died during $kind"
                secs+=("$T_SECS")
                speeds+="$(mibps "$T_SECS") "
                log "    $(mibps "$T_SECS") MiB/s, gatehouse VmHWM so far $(mib "$(status_kib "$gh_pid" VmHWM)") MiB"
            done
            hwm=$(status_kib "$gh_pid" VmHWM)
            local med
            med=$(median "${secs[@]}")
            rows+=("| $kind | $via | $(awk -v s="$med" 'BEGIN { printf "%.2f", s }') | $(mibps "$med") | ${speeds% } | $(mib "$hwm") |")
        done
    done
    stop_samplers
    hwm=$(status_kib "$gh_pid" VmHWM)

    local report=$TMP/stream.md
    {
        echo "# gatehouse streaming check: 1 GiB up and down"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), max_request_body 2GiB (bench/gatehouse-stream.yaml.tmpl)"
        echo "- upload origin: bench/sink.py (reads and discards the body, answers with the byte count, which is checked);"
        echo "  download origin: nginx serving a 1 GiB sparse file (bench/nginx-files.conf.tmpl). Client: curl."
        echo "- each transfer moves 1 GiB (byte count checked) and runs $STREAM_REPS times; \"direct\" is the same transfer"
        echo "  without gatehouse (the ceiling of this setup). Runs of ~1 s on a noisy machine: read the medians."
        echo
        echo "| transfer | path | median seconds | median MiB/s | all runs, MiB/s | gatehouse VmHWM after, MiB |"
        echo "|---|---|---:|---:|---|---:|"
        printf '%s\n' "${rows[@]}"
        echo
        echo "gatehouse RSS: idle $(mib "$idle") MiB, peak sampled VmRSS $(mib "$(<"$TMP/rss-stream")") MiB, lifetime peak VmHWM $(mib "$hwm") MiB" \
            "($( ((hwm < limit_kib)) && echo "under" || echo "OVER") the 64 MiB limit of issue 3)."
    } >"$report"
    mkdir -p "$OUT_DIR"
    cp "$report" "$OUT_DIR/stream-latest.md"
    echo
    cat "$report"
    echo
    log "written to bench/out/stream-latest.md"
    ((hwm < limit_kib)) || { log "gatehouse peak RSS is over 64 MiB"; exit 3; }
}

# ---------------------------------------------------------------- reload mode

RELOAD_SEQ=0 # sequence number in the current routes/extra.yaml

# write_extra DIR SEQ : replaces DIR/extra.yaml atomically, as editors do: write a temp file in
# the same folder, then rename it over (the gateway's loader skips names starting with '.').
write_extra() {
    render "$BENCH_DIR/gatehouse-reload-extra.yaml.tmpl" "$1/.extra.yaml.tmp" "SEQ=$2"
    mv -f "$1/.extra.yaml.tmp" "$1/extra.yaml"
}

config_version() { # BASE_URL -> config.version from GET /readyz (+1 per applied reload)
    local json
    json=$(curl -sS --max-time 2 "$1/readyz") || die "GET $1/readyz failed"
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])["config"]["version"])' "$json" ||
        die "no config.version in /readyz: $json"
}

reload_metric() { # BASE_URL RESULT -> gatehouse_config_reloads_total{result="RESULT"}
    curl -sS --max-time 2 "$1/metrics" |
        awk -v want="gatehouse_config_reloads_total{result=\"$2\"}" '$1 == want { print $2; found = 1 } END { if (!found) print "?" }'
}

# check_reload DIR BASE_URL : one rewrite before measuring; fails unless gatehouse applies it.
check_reload() {
    local dir=$1 base=$2 before body="" i
    before=$(config_version "$base")
    RELOAD_SEQ=$((RELOAD_SEQ + 1))
    write_extra "$dir" "$RELOAD_SEQ"
    for ((i = 0; i < 50; i++)); do
        body=$(curl -sS --max-time 1 "$base/reload-probe" 2>/dev/null || true)
        [[ $body == "reload $RELOAD_SEQ" ]] && break
        sleep 0.1
    done
    [[ $body == "reload $RELOAD_SEQ" ]] ||
        die "gatehouse did not apply a change to routes/extra.yaml within 5 s (/reload-probe answers '$body')"
    sleep 0.5
    i=$(config_version "$base")
    ((i == before + 1)) || die "one rewrite moved config.version from $before to $i (expected +1)"
}

# start_rewriter DIR : in the background, every RELOAD_INTERVAL s, rewrites DIR/extra.yaml with
# the next sequence number and records it in $TMP/rewriter-seq. SIGTERM (stop_rewriter) lets a
# rewrite in progress finish, so the recorded number is exactly the last one written.
start_rewriter() {
    local dir=$1
    echo "$RELOAD_SEQ" >"$TMP/rewriter-seq"
    (
        seq=$RELOAD_SEQ stop=0 sleeper=""
        trap 'stop=1; kill $sleeper 2>/dev/null' TERM
        while ((!stop)); do
            sleep "$RELOAD_INTERVAL" &
            sleeper=$!
            wait "$sleeper" || true
            ((stop)) && break
            seq=$((seq + 1))
            write_extra "$dir" "$seq"
            echo "$seq" >"$TMP/rewriter-seq"
        done
    ) &
    REWRITER_PID=$!
}
stop_rewriter() { # sets RELOAD_SEQ to the last sequence number written
    kill "$REWRITER_PID" 2>/dev/null || true
    wait "$REWRITER_PID" 2>/dev/null || true
    REWRITER_PID=""
    RELOAD_SEQ=$(<"$TMP/rewriter-seq")
}

# verdict_max VALUE LIMIT -> "meets target" if VALUE <= LIMIT
verdict_max() { awk -v v="$1" -v l="$2" 'BEGIN { if (v == "-") print "-"; else if (v <= l) print "meets target"; else print "misses" }'; }
# verdict_min VALUE LIMIT -> "meets target" if VALUE >= LIMIT; "misses, within noise" if less than 15% short
verdict_min() {
    awk -v v="$1" -v l="$2" 'BEGIN {
        if (v == "-") print "-"; else if (v >= l) print "meets target"; else if (v >= l * 0.85) print "misses, within noise"; else print "misses" }'
}

bench_reload() {
    local origin_port gh_port origin_pid gh_pid base gw c rep kind v0 v1 seq0 rewrites applied
    read -r origin_port gh_port <<<"$(free_ports 2)"

    log "starting the origin (nginx, 1 worker) on 127.0.0.1:$origin_port"
    start_nginx origin "$BENCH_DIR/nginx-origin.conf.tmpl" "$origin_port"
    origin_pid=$SERVER_PID
    wait_http origin "$origin_pid" "http://127.0.0.1:$origin_port/" 200

    # A folder of its own: gatehouse watches the folder of gateway.yaml, and $TMP gets logs.
    gw=$TMP/gateway
    mkdir -p "$gw/routes"
    render "$BENCH_DIR/gatehouse-reload.yaml.tmpl" "$gw/gateway.yaml" "PORT=$gh_port" "ORIGIN_PORT=$origin_port"
    set_workers "$gw/gateway.yaml"
    render "$BENCH_DIR/gatehouse-reload-main.yaml.tmpl" "$gw/routes/main.yaml"
    write_extra "$gw/routes" "$RELOAD_SEQ"
    log "starting gatehouse on 127.0.0.1:$gh_port, config in $gw (watched)"
    run_gatehouse "$gw/gateway.yaml"
    gh_pid=$SERVER_PID
    base=http://127.0.0.1:$gh_port
    URL[gatehouse]=$base/
    wait_http gatehouse "$gh_pid" "${URL[gatehouse]}" 200
    curl -sS --max-time 2 "${URL[gatehouse]}" | grep -q gatehouse-bench-origin ||
        die "gatehouse does not return the origin's response"
    log "checking that gatehouse applies a rewrite of routes/extra.yaml"
    check_reload "$gw/routes" "$base"

    warm_up gatehouse

    declare -A NON2XX SOCKERR APPLIED REWRITES
    local total=$((${#CONN_LIST[@]} * REPS * 2)) n=0
    for c in "${CONN_LIST[@]}"; do
        for kind in steady reloads; do NON2XX[$kind:$c]=0; SOCKERR[$kind:$c]=0; APPLIED[$kind:$c]=0; REWRITES[$kind:$c]=0; done
        for ((rep = 1; rep <= REPS; rep++)); do
            alternate_order "$rep" steady reloads # steady, reloads; reloads, steady; ...
            for kind in "${ORDER[@]}"; do
                n=$((n + 1))
                log "[$n/$total] gatehouse, $c connections, rep $rep/$REPS, $kind, ${DURATION}s"
                v0=$(config_version "$base")
                seq0=$RELOAD_SEQ
                if [[ $kind == reloads ]]; then start_rewriter "$gw/routes"; fi
                run_wrk gatehouse "$c" "$DURATION" "$kind-rep$rep"
                if [[ $kind == reloads ]]; then
                    stop_rewriter
                    sleep 1 # the last rewrite's reload lands here, not in the next run
                fi
                kill -0 "$gh_pid" 2>/dev/null || die "gatehouse died during the $kind run"
                v1=$(config_version "$base")
                rewrites=$((RELOAD_SEQ - seq0))
                applied=$((v1 - v0))
                if ((applied != rewrites)); then
                    log "WARNING: $rewrites rewrites but config.version moved by $applied"
                fi
                RUN_RPS[$kind:$c]+="$LAST_RPS "
                RUN_P50[$kind:$c]+="$LAST_P50_US "
                RUN_P99[$kind:$c]+="$LAST_P99_US "
                NON2XX[$kind:$c]=$((${NON2XX[$kind:$c]} + LAST_NON2XX))
                SOCKERR[$kind:$c]=$((${SOCKERR[$kind:$c]} + LAST_SOCKET_ERRORS))
                APPLIED[$kind:$c]=$((${APPLIED[$kind:$c]} + applied))
                REWRITES[$kind:$c]=$((${REWRITES[$kind:$c]} + rewrites))
                RUN_LINES+=("| $c | $rep | $kind | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") | $LAST_NON2XX | $LAST_SOCKET_ERRORS | $rewrites | $applied |")
                log "    $(fmt_int "$LAST_RPS") req/s, p99 $(fmt_ms "$LAST_P99_US") ms, non-2xx $LAST_NON2XX, socket errors $LAST_SOCKET_ERRORS, reloads applied $applied/$rewrites"
            done
        done
    done
    local m_success m_failure m_unchanged
    m_success=$(reload_metric "$base" success)
    m_failure=$(reload_metric "$base" failure)
    m_unchanged=$(reload_metric "$base" unchanged)

    # ---- report
    local report=$TMP/reload.md p99_s p99_r r_p99 errs
    {
        echo "# gatehouse under load while its routes are reloaded"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), config: gateway.yaml + routes/main.yaml + routes/extra.yaml"
        echo "  (bench/gatehouse-reload*.yaml.tmpl), watching its config folders"
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response (bench/nginx-origin.conf.tmpl)"
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET /, ${DURATION}s per run, $REPS reps of a steady run and a run with reloads (order alternated per rep), ${WARMUP}s warm-up"
        echo "- reloads: during a \"reloads\" run, routes/extra.yaml is rewritten every ${RELOAD_INTERVAL}s (temp file + rename; each rewrite changes a"
        echo "  \`respond\` body, so each is a real config change); \"applied\" = increase of config.version in /readyz over the run."
        echo "- gatehouse_config_reloads_total at the end: success $m_success, failure $m_failure, unchanged $m_unchanged (includes one check reload before the runs)"
        echo "- Target: median p99 with reloads / median p99 steady <= 1.20, zero non-2xx, zero socket errors."
        echo "  On this noisy 2-core machine p99 moves 10-40% run to run: read the individual runs too."
        echo
        echo "| conns | runs | median req/s | median p50 ms | median p99 ms | non-2xx | socket errors | rewrites | reloads applied |"
        echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        for c in "${CONN_LIST[@]}"; do
            for kind in steady reloads; do
                # shellcheck disable=SC2086 # word-splitting the space-separated lists is intended
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$kind" \
                    "$(fmt_int "$(median ${RUN_RPS[$kind:$c]})")" "$(fmt_ms "$(median ${RUN_P50[$kind:$c]})")" \
                    "$(fmt_ms "$(median ${RUN_P99[$kind:$c]})")" "${NON2XX[$kind:$c]}" "${SOCKERR[$kind:$c]}" \
                    "${REWRITES[$kind:$c]}" "${APPLIED[$kind:$c]}"
            done
        done
        echo
        for c in "${CONN_LIST[@]}"; do
            # shellcheck disable=SC2086
            p99_s=$(median ${RUN_P99[steady:$c]})
            # shellcheck disable=SC2086
            p99_r=$(median ${RUN_P99[reloads:$c]})
            r_p99=$(ratio "$p99_r" "$p99_s")
            errs=$((${NON2XX[steady:$c]} + ${SOCKERR[steady:$c]} + ${NON2XX[reloads:$c]} + ${SOCKERR[reloads:$c]}))
            echo "- $c connections: p99 $(fmt_ms "$p99_s") ms steady, $(fmt_ms "$p99_r") ms with reloads:" \
                "ratio **$r_p99** ($(verdict_max "$r_p99" 1.2)); non-2xx + socket errors: **$errs** ($(verdict_max "$errs" 0))."
        done
        echo
        runs_table "All runs:" \
            "| conns | rep | runs | req/s | p50 ms | p99 ms | non-2xx | socket errors | rewrites | reloads applied |" \
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
    } >"$report"
    publish "$report" reload-latest
}

# ---------------------------------------------------------------- auth mode

AUTH_ROUTES=(plain hs rs) # gatehouse-auth.yaml.tmpl: no auth; HS256 + RBAC; RS256 + RBAC

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; } # stdin -> base64url without padding

# sign_rs256 KEY_PEM SUB ROLES_JSON TTL_SECONDS : prints a compact RS256 JWT signed with KEY_PEM
# (gatehouse mints HS tokens only).
sign_rs256() {
    local key=$1 sub=$2 roles=$3 ttl=$4 now header payload sig
    now=$(date +%s)
    header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
    payload=$(printf '{"sub":"%s","roles":%s,"iat":%d,"exp":%d}' "$sub" "$roles" "$now" "$((now + ttl))" | b64url)
    sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$key" -binary | b64url) ||
        die "openssl could not sign the RS256 token"
    printf '%s.%s.%s\n' "$header" "$payload" "$sig"
}

# expect_status LABEL URL WANT [CURL_ARGS...] : dies unless GET URL answers WANT (and, for 200,
# the origin's body).
expect_status() {
    local label=$1 url=$2 want=$3 code body=$TMP/check-body.txt
    shift 3
    code=$(curl -sS -o "$body" -w '%{http_code}' --max-time 2 "$@" "$url") || die "$label: curl $url failed"
    [[ $code == "$want" ]] || { cat "$body" >&2; echo >&2; die "$label: $url answered $code, expected $want"; }
    if [[ $want == 200 ]]; then
        grep -q gatehouse-bench-origin "$body" || die "$label: $url did not return the origin's response"
    fi
    log "    $label: $code"
}

# auth_run NAME CONNS REP : one measured wrk run against the auth mode's route NAME, recorded in
# RUN_RPS/RUN_P50/RUN_P99, REP_RPS and RUN_LINES (called by measure_rounds from bench_auth).
auth_run() {
    local name=$1 c=$2 rep=$3
    run_wrk "$name" "$c" "$DURATION" "rep$rep"
    kill -0 "$gh_pid" 2>/dev/null || die "gatehouse died during the /$name run"
    RUN_RPS[$name:$c]+="$LAST_RPS "
    RUN_P50[$name:$c]+="$LAST_P50_US "
    RUN_P99[$name:$c]+="$LAST_P99_US "
    REP_RPS[$name:$c:$rep]=$LAST_RPS
    RUN_LINES+=("| $c | $rep | /$name | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") | $LAST_ERRORS |")
    log "    $(fmt_int "$LAST_RPS") req/s, p99 $(fmt_ms "$LAST_P99_US") ms, errors: $LAST_ERRORS"
}

bench_auth() {
    local origin_port gh_port gh_pid base c rep name secret ttl hs_token rs_token hs_bad rs_bad
    read -r origin_port gh_port <<<"$(free_ports 2)"

    start_origin "$origin_port"

    # Keys made for this run only: an HMAC secret (32 random bytes, as 64 hex characters) and an
    # RSA 2048 key pair; gatehouse gets the public half.
    log "generating the HS256 secret and an RSA 2048 key pair with openssl"
    secret=$(openssl rand -hex 32) || die "openssl rand failed"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rs-key.pem" 2>"$TMP/openssl.log" ||
        die "openssl could not generate an RSA key"
    openssl pkey -in "$TMP/rs-key.pem" -pubout -out "$TMP/rs-public.pem" 2>>"$TMP/openssl.log" ||
        die "openssl could not extract the public key"

    log "starting gatehouse (routes /plain, /hs, /rs) on 127.0.0.1:$gh_port"
    start_gatehouse "$BENCH_DIR/gatehouse-auth.yaml.tmpl" "$gh_port" "ORIGIN_PORT=$origin_port" \
        "HS_SECRET=$secret" "RS_PUBLIC_KEY=$TMP/rs-public.pem"
    gh_pid=$SERVER_PID
    base=http://127.0.0.1:$gh_port
    for name in "${AUTH_ROUTES[@]}"; do URL[$name]=$base/$name; done
    wait_http gatehouse "$gh_pid" "${URL[plain]}" 200

    # Tokens live at least an hour and longer than every run of this script put together.
    ttl=$((${#CONN_LIST[@]} * REPS * ${#AUTH_ROUTES[@]} * (DURATION + 5) + (1 + ${#AUTH_ROUTES[@]}) * WARMUP + 600))
    if ((ttl < 3600)); then ttl=3600; fi
    log "minting tokens (ttl ${ttl}s): hs with \`gatehouse token\`, rs signed here with openssl"
    hs_token=$("$GATEHOUSE_BIN" token -c "$TMP/gatehouse.yaml" --provider hs --sub bench --roles reader --ttl "${ttl}s") ||
        die "gatehouse token --provider hs failed"
    hs_bad=$("$GATEHOUSE_BIN" token -c "$TMP/gatehouse.yaml" --provider hs --sub bench --roles writer --ttl "${ttl}s") ||
        die "gatehouse token --provider hs failed"
    rs_token=$(sign_rs256 "$TMP/rs-key.pem" bench '["reader"]' "$ttl")
    rs_bad=$(sign_rs256 "$TMP/rs-key.pem" bench '["writer"]' "$ttl")
    WRK_HEADER[hs]="Authorization: Bearer $hs_token"
    WRK_HEADER[rs]="Authorization: Bearer $rs_token"

    # Each route must do what it is measured for before it is measured.
    log "checking every route: 200 with its token, 401 without (or with the other provider's), 403 without the role"
    expect_status "plain, no token" "${URL[plain]}" 200
    expect_status "hs, hs token (reader)" "${URL[hs]}" 200 -H "${WRK_HEADER[hs]}"
    expect_status "hs, no token" "${URL[hs]}" 401
    expect_status "hs, rs token" "${URL[hs]}" 401 -H "${WRK_HEADER[rs]}"
    expect_status "hs, hs token (writer)" "${URL[hs]}" 403 -H "Authorization: Bearer $hs_bad"
    expect_status "rs, rs token (reader)" "${URL[rs]}" 200 -H "${WRK_HEADER[rs]}"
    expect_status "rs, no token" "${URL[rs]}" 401
    expect_status "rs, hs token" "${URL[rs]}" 401 -H "${WRK_HEADER[hs]}"
    expect_status "rs, rs token (writer)" "${URL[rs]}" 403 -H "Authorization: Bearer $rs_bad"

    warm_up origin "${AUTH_ROUTES[@]}"

    declare -A REP_RPS
    measure_rounds auth_run "" "${AUTH_ROUTES[@]}"

    # ---- report
    local report=$TMP/auth.md rps p50 p99 p_rps p_p99 r_rps r_p99 per_rep
    {
        echo "# gatehouse auth cost: plain route vs JWT HS256 + RBAC vs JWT RS256 + RBAC"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), config bench/gatehouse-auth.yaml.tmpl:"
        echo "  \`/plain\` no auth; \`/hs\` \`auth: {jwt: hs}\` (HS256, 32-byte random secret) and"
        echo "  \`authorize: [{methods: [GET], roles: [reader]}]\`; \`/rs\` \`auth: {jwt: rs}\` (RS256, RSA 2048 public key"
        echo "  generated with openssl for this run) and the same rule. All three proxy to the same origin."
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response on every path (bench/nginx-origin.conf.tmpl)"
        echo "- tokens: \`gatehouse token --provider hs --sub bench --roles reader --ttl ${ttl}s\`; the RS256 token"
        echo "  (sub, roles [reader], iat, exp) is signed by run.sh with \`openssl dgst -sha256 -sign\`. Checked before"
        echo "  measuring: each route answers 200 with its token; /hs and /rs answer 401 without a token or with the"
        echo "  other provider's token and 403 with a token lacking the role."
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET, \`-H \"Authorization: Bearer <token>\"\`"
        echo "  on /hs and /rs, ${DURATION}s per run, $REPS reps per route and connection count, order alternated per rep"
        echo "  (plain hs rs, rs hs plain, ...), ${WARMUP}s warm-up per route"
        echo "- Target: median req/s of /hs >= 0.90 x that of /plain in the same run. /rs is reported, no target."
        echo "  On this noisy 2-core machine differences under ~15% are noise: read the per-rep ratios and the runs."
        echo
        echo "| conns | route | median req/s | median p50 ms | median p99 ms | req/s vs /plain | p99 vs /plain |"
        echo "|---:|---|---:|---:|---:|---:|---:|"
        for c in "${CONN_LIST[@]}"; do
            # shellcheck disable=SC2086 # word-splitting the space-separated lists is intended
            p_rps=$(median ${RUN_RPS[plain:$c]})
            # shellcheck disable=SC2086
            p_p99=$(median ${RUN_P99[plain:$c]})
            for name in "${AUTH_ROUTES[@]}"; do
                # shellcheck disable=SC2086
                rps=$(median ${RUN_RPS[$name:$c]})
                # shellcheck disable=SC2086
                p50=$(median ${RUN_P50[$name:$c]})
                # shellcheck disable=SC2086
                p99=$(median ${RUN_P99[$name:$c]})
                printf '| %s | /%s | %s | %s | %s | %s | %s |\n' "$c" "$name" "$(fmt_int "$rps")" \
                    "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$(ratio "$rps" "$p_rps")" "$(ratio "$p99" "$p_p99")"
            done
        done
        echo
        for c in "${CONN_LIST[@]}"; do
            # shellcheck disable=SC2086
            p_rps=$(median ${RUN_RPS[plain:$c]})
            # shellcheck disable=SC2086
            p_p99=$(median ${RUN_P99[plain:$c]})
            for name in hs rs; do
                # shellcheck disable=SC2086
                r_rps=$(ratio "$(median ${RUN_RPS[$name:$c]})" "$p_rps")
                # shellcheck disable=SC2086
                r_p99=$(ratio "$(median ${RUN_P99[$name:$c]})" "$p_p99")
                per_rep=""
                for ((rep = 1; rep <= REPS; rep++)); do
                    per_rep+="$(ratio "${REP_RPS[$name:$c:$rep]}" "${REP_RPS[plain:$c:$rep]}") "
                done
                if [[ $name == hs ]]; then
                    echo "- $c connections, $name/plain: req/s **$r_rps** ($(verdict_min "$r_rps" 0.9) >= 0.90), p99 **$r_p99**; req/s ratio per rep: ${per_rep% }"
                else
                    echo "- $c connections, $name/plain: req/s **$r_rps**, p99 **$r_p99** (no target); req/s ratio per rep: ${per_rep% }"
                fi
            done
        done
        echo
        runs_table "All runs (\"ref\" = wrk straight against the origin, no gatehouse: the ceiling of this setup):" \
            "| conns | rep | route | req/s | p50 ms | p99 ms | wrk errors |" "|---:|---|---|---:|---:|---:|---|"
    } >"$report"
    publish "$report" auth-latest
}

# ---------------------------------------------------------------- ratelimit mode

# Measured targets: /plain and /limited on the instance with rate_limit.store: memory, /limited
# on the instance with store: redis (gatehouse-ratelimit.yaml.tmpl).
RL_TARGETS=(plain memory redis)
RL_LIMIT=1000000 # per second: one request per microsecond, the finest a limit can count

proc_cpu_ticks() { # "PID..." -> "USER SYSTEM" clock ticks of the whole processes (every thread, live or exited), /proc/PID/stat, summed
    local stat f pid u=0 s=0
    for pid in $1; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) } # from field 3 (state) on: comm may hold spaces
        read -r -a f <<<"$stat"
        u=$((u + f[11])); s=$((s + f[12])) # fields 14 (utime) and 15 (stime)
    done
    echo "$u $s"
}

ticks_s() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'; } # TICKS -> seconds

redis_cmd() { "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_info() { # SECTION FIELD -> the field's value in INFO SECTION (commandstats: the whole value)
    redis_cmd info "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print "?" }'
}

redis_calls() { # COMMAND (lower case) -> its calls so far (0 before the first)
    local v
    v=$(redis_info commandstats "cmdstat_$1")
    if [[ $v == "?" ]]; then echo 0; else v=${v#calls=}; echo "${v%%,*}"; fi
}

# start_redis NAME PORT : redis-server on 127.0.0.1:PORT, no persistence, files in the temp dir;
# waits until it answers PING; sets SERVER_PID.
start_redis() {
    local name=$1 port=$2
    start_server "$name" "$REDIS_SERVER" --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$TMP" --logfile ''
    await_up "$name" "$SERVER_PID" 10 "PING on 127.0.0.1:$port" redis_pongs "$port"
}

# redis_pongs PORT : whether the Redis server on PORT answers PING.
redis_pongs() {
    [[ $("$REDIS_CLI" -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]
}

# rl_expect LABEL URL WANT [HEADER_REGEX] : dies unless GET URL answers WANT (200: with the
# origin's body) and, if given, a response header matching HEADER_REGEX (case-insensitive).
rl_expect() {
    local label=$1 url=$2 want=$3 re=${4:-} code body=$TMP/check-body.txt head=$TMP/check-head.txt
    code=$(curl -sS -D "$head" -o "$body" -w '%{http_code}' --max-time 2 "$url") || die "$label: curl $url failed"
    [[ $code == "$want" ]] || { cat "$head" "$body" >&2; echo >&2; die "$label: $url answered $code, expected $want"; }
    if [[ $want == 200 ]]; then
        grep -q gatehouse-bench-origin "$body" || die "$label: $url did not return the origin's response"
    fi
    if [[ -n $re ]]; then
        tr -d '\r' <"$head" | grep -qiE "$re" || { cat "$head" >&2; die "$label: no header matching '$re' in the answer of $url"; }
    fi
    log "    $label: $code${re:+, header ${re}}"
}

# rl_check NAME BASE_URL : the instance's routes do what they are measured for.
rl_check() {
    local name=$1 base=$2
    rl_expect "$name /plain" "$base/plain" 200
    rl_expect "$name /limited" "$base/limited" 200 "^ratelimit-limit: $RL_LIMIT\$"
    rl_expect "$name /tight, 1st" "$base/tight" 200 '^ratelimit-remaining: 0$'
    rl_expect "$name /tight, 2nd" "$base/tight" 429 '^retry-after: [0-9]+$'
}

# Per NAME:CONNS, the figures of counted runs (record_counted_run); LABEL names the rows.
declare -A REP_RPS LABEL ST_PU ST_PS ST_RU ST_RS ST_PCPU_REQ ST_RCPU_REQ ST_OPS ST_INST ST_CPR

# counted_run NAME CONNS REP "PIDS" COMMAND : one measured wrk run against URL[NAME] with, around
# it, the CPU of the PIDS (the process under load; nginx: its workers) and of redis-server, Redis'
# command count and its calls of COMMAND; kept in RUN_PU RUN_PS (the PIDS' user and system
# seconds), RUN_RU RUN_RS (redis-server's), RUN_OPS (Redis ops/s), RUN_INST (its
# instantaneous_ops_per_sec half-way through) and RUN_CPR (calls of COMMAND per request).
counted_run() {
    local name=$1 c=$2 rep=$3 pids=$4 command=$5 p0 p1 r0 r1 cmd0 cmd1 ev0 ev1 sampler
    rm -f "$TMP/redis-inst"
    read -r -a p0 <<<"$(proc_cpu_ticks "$pids")"
    read -r -a r0 <<<"$(proc_cpu_ticks "$REDIS_PID")"
    cmd0=$(redis_info stats total_commands_processed)
    ev0=$(redis_calls "$command")
    # Redis' own rate, averaged over its last ~1.6 s, read half-way through the run.
    (sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"; redis_info stats instantaneous_ops_per_sec >"$TMP/redis-inst") &
    sampler=$!
    SAMPLERS+=("$sampler")
    run_wrk "$name" "$c" "$DURATION" "rep$rep"
    wait "$sampler" 2>/dev/null || true
    SAMPLERS=()
    read -r -a p1 <<<"$(proc_cpu_ticks "$pids")"
    read -r -a r1 <<<"$(proc_cpu_ticks "$REDIS_PID")"
    cmd1=$(redis_info stats total_commands_processed)
    ev1=$(redis_calls "$command")
    kill -0 "${pids%% *}" 2>/dev/null || die "the server under load died during the $name run"
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server died during the $name run"
    RUN_PU=$(ticks_s $((p1[0] - p0[0]))); RUN_PS=$(ticks_s $((p1[1] - p0[1])))
    RUN_RU=$(ticks_s $((r1[0] - r0[0]))); RUN_RS=$(ticks_s $((r1[1] - r0[1])))
    # Three of the commands counted are this function's INFO calls (the one that read cmd0, the
    # commandstats one and the sampler's; the one that read cmd1 is not in its own count).
    RUN_OPS=$(awk -v n="$((cmd1 - cmd0 - 3))" -v s="$LAST_DURATION_S" 'BEGIN { printf "%.0f", (n < 0 ? 0 : n) / s }')
    RUN_INST=$(tr -d ' ' <"$TMP/redis-inst" 2>/dev/null || echo "?")
    RUN_CPR=$(awk -v e="$((ev1 - ev0))" -v r="$LAST_REQUESTS" 'BEGIN { if (r > 0) printf "%.3f", e / r; else print "-" }')
}

# record_counted_run NAME CONNS REP LABEL [EXTRA_CELLS] : keeps the figures of the last
# counted_run under NAME:CONNS (REP_RPS by rep) and adds its row to the runs table (EXTRA_CELLS,
# e.g. " 12 |", go before the errors).
record_counted_run() {
    local name=$1 c=$2 rep=$3 label=$4 extra=${5:-}
    RUN_RPS[$name:$c]+="$LAST_RPS "
    RUN_P50[$name:$c]+="$LAST_P50_US "
    RUN_P99[$name:$c]+="$LAST_P99_US "
    REP_RPS[$name:$c:$rep]=$LAST_RPS
    ST_PU[$name:$c]+="$RUN_PU "; ST_PS[$name:$c]+="$RUN_PS "
    ST_RU[$name:$c]+="$RUN_RU "; ST_RS[$name:$c]+="$RUN_RS "
    ST_PCPU_REQ[$name:$c]+="$(awk -v u="$RUN_PU" -v s="$RUN_PS" -v r="$LAST_REQUESTS" 'BEGIN { printf "%.1f", (u + s) * 1e6 / r }') "
    ST_RCPU_REQ[$name:$c]+="$(awk -v u="$RUN_RU" -v s="$RUN_RS" -v r="$LAST_REQUESTS" 'BEGIN { printf "%.1f", (u + s) * 1e6 / r }') "
    ST_OPS[$name:$c]+="$RUN_OPS "
    if [[ $RUN_INST =~ ^[0-9]+$ ]]; then ST_INST[$name:$c]+="$RUN_INST "; fi
    ST_CPR[$name:$c]+="$RUN_CPR "
    RUN_LINES+=("| $c | $rep | $label | $(fmt_int "$LAST_RPS") | $(fmt_ms "$LAST_P50_US") | $(fmt_ms "$LAST_P99_US") | $RUN_PU + $RUN_PS | $RUN_RU + $RUN_RS | $RUN_OPS | $RUN_INST | $RUN_CPR |$extra $LAST_ERRORS |")
}

# store_load_table PROCESS COMMAND NAME... : per connection count and NAME, the medians of the
# counted runs: CPU seconds of PROCESS (the server under load) and redis-server, per request, Redis
# ops/s and calls of COMMAND per request; LABEL (an associative array) names the rows.
store_load_table() {
    local process=$1 command=$2 c name
    shift 2
    echo "| conns | target | $process CPU s | redis-server CPU s | $process CPU µs/req | redis-server CPU µs/req | Redis ops/s | Redis instantaneous_ops_per_sec | $command / request |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CONN_LIST[@]}"; do
        for name in "$@"; do
            printf '| %s | %s | %s + %s | %s + %s | %s | %s | %s | %s | %s |\n' "$c" "${LABEL[$name]}" \
                "$(median_of ST_PU "$name:$c")" "$(median_of ST_PS "$name:$c")" \
                "$(median_of ST_RU "$name:$c")" "$(median_of ST_RS "$name:$c")" \
                "$(median_of ST_PCPU_REQ "$name:$c")" "$(median_of ST_RCPU_REQ "$name:$c")" \
                "$(fmt_int "$(median_of ST_OPS "$name:$c")")" "$(fmt_int "$(median_of ST_INST "$name:$c")")" \
                "$(median_of ST_CPR "$name:$c")"
        done
    done
}

# median_row CONNS NAME BASE [EXTRA_CELLS] : a table row of NAME's median req/s, p50 and p99 at
# CONNS, and the ratio of its req/s and p99 to BASE's ("-" without one); LABEL names the row.
median_row() {
    local c=$1 name=$2 base=$3 rps p99
    rps=$(median_of RUN_RPS "$name:$c")
    p99=$(median_of RUN_P99 "$name:$c")
    printf '| %s | %s | %s | %s | %s | %s | %s |%s\n' "$c" "${LABEL[$name]}" "$(fmt_int "$rps")" \
        "$(fmt_ms "$(median_of RUN_P50 "$name:$c")")" "$(fmt_ms "$p99")" \
        "$(ratio "$rps" "$(median_of RUN_RPS "$base:$c")")" "$(ratio "$p99" "$(median_of RUN_P99 "$base:$c")")" "${4:-}"
}

# pair_line CONNS A B TARGET [NOTE] : one line comparing NAME A with NAME B at CONNS: the ratio
# of their median req/s against TARGET (the least A/B that meets it), of their median p99, and
# of their req/s in each rep (adjacent runs, less exposed to drift than the medians).
pair_line() {
    local c=$1 a=$2 b=$3 target=$4 note=${5:-} r_rps r_p99 per_rep="" rep
    r_rps=$(ratio "$(median_of RUN_RPS "$a:$c")" "$(median_of RUN_RPS "$b:$c")")
    r_p99=$(ratio "$(median_of RUN_P99 "$a:$c")" "$(median_of RUN_P99 "$b:$c")")
    for ((rep = 1; rep <= REPS; rep++)); do
        per_rep+="$(ratio "${REP_RPS[$a:$c:$rep]}" "${REP_RPS[$b:$c:$rep]}") "
    done
    echo "- $c connections, $a/$b${note:+ ($note)}: req/s **$r_rps** ($(verdict_min "$r_rps" "$target") >= $(printf '%.2f' "$target")), p99 **$r_p99**; req/s ratio per rep: ${per_rep% }"
}

# rl_run TARGET CONNS REP : one measured wrk run of the ratelimit mode (counted_run on the
# gatehouse instance serving TARGET, EVALSHA counted), recorded.
rl_run() {
    local name=$1 c=$2 rep=$3
    counted_run "$name" "$c" "$rep" "${RL_GH_PID[$name]}" evalsha
    record_counted_run "$name" "$c" "$rep" "${LABEL[$name]}"
    log "    $(fmt_int "$LAST_RPS") req/s, p99 $(fmt_ms "$LAST_P99_US") ms, errors: $LAST_ERRORS;" \
        "CPU s (user + sys) gatehouse $RUN_PU + $RUN_PS, redis-server $RUN_RU + $RUN_RS; Redis $RUN_OPS ops/s, EVALSHA/request $RUN_CPR"
}

bench_ratelimit() {
    local origin_port gh_mem_port gh_redis_port c rep name ev0 ev1 base_mem base_redis
    read -r origin_port gh_mem_port gh_redis_port REDIS_PORT <<<"$(free_ports 4)"
    declare -gA RL_GH_PID
    LABEL=([plain]="plain (/plain, memory instance)" [memory]="memory (/limited, store: memory)"
        [redis]="redis (/limited, store: redis)")

    start_origin "$origin_port"

    log "starting redis-server (--save '' --appendonly no) on 127.0.0.1:$REDIS_PORT"
    start_redis redis "$REDIS_PORT"
    REDIS_PID=$SERVER_PID

    log "starting gatehouse with rate_limit.store: memory on 127.0.0.1:$gh_mem_port"
    GH_NAME=gatehouse-memory start_gatehouse "$BENCH_DIR/gatehouse-ratelimit.yaml.tmpl" "$gh_mem_port" \
        "ORIGIN_PORT=$origin_port" "LIMIT=$RL_LIMIT" STORE=memory ON_STORE_ERROR= REDIS=
    RL_GH_PID[plain]=$SERVER_PID
    RL_GH_PID[memory]=$SERVER_PID
    base_mem=http://127.0.0.1:$gh_mem_port
    wait_http gatehouse-memory "$SERVER_PID" "$base_mem/plain" 200

    log "starting gatehouse with rate_limit.store: redis (on_store_error: deny) on 127.0.0.1:$gh_redis_port"
    GH_NAME=gatehouse-redis start_gatehouse "$BENCH_DIR/gatehouse-ratelimit.yaml.tmpl" "$gh_redis_port" \
        "ORIGIN_PORT=$origin_port" "LIMIT=$RL_LIMIT" STORE=redis \
        "ON_STORE_ERROR=$(printf '\n  on_store_error: deny')" \
        "REDIS=$(printf '\nredis:\n  url: redis://127.0.0.1:%s/0\n' "$REDIS_PORT")"
    RL_GH_PID[redis]=$SERVER_PID
    base_redis=http://127.0.0.1:$gh_redis_port
    wait_http gatehouse-redis "$SERVER_PID" "$base_redis/plain" 200

    URL[plain]=$base_mem/plain
    URL[memory]=$base_mem/limited
    URL[redis]=$base_redis/limited

    # Each limit must decide, in the store it is measured with, before it is measured.
    log "checking both instances: /plain 200; /limited 200 with RateLimit-Limit $RL_LIMIT; /tight 200 then 429"
    ev0=$(redis_calls evalsha)
    rl_check memory "$base_mem"
    ev1=$(redis_calls evalsha)
    ((ev1 == ev0)) || die "the memory instance ran $((ev1 - ev0)) EVALSHA in Redis (expected none)"
    rl_check redis "$base_redis"
    ev0=$(redis_calls evalsha)
    ((ev0 - ev1 >= 3)) || die "the redis instance's 3 limited requests ran $((ev0 - ev1)) EVALSHA in Redis (expected 3)"
    log "    Redis ran $((ev0 - ev1)) EVALSHA for the redis instance's 3 limited requests, none for the memory instance's"

    warm_up origin "${RL_TARGETS[@]}"

    measure_rounds rl_run " | | | | |" "${RL_TARGETS[@]}"
    local keys
    keys=$(redis_cmd dbsize | tr -d '\r')

    # ---- report
    local report=$TMP/ratelimit.md
    {
        echo "# gatehouse rate-limit cost: plain route vs a limit that never refuses, in memory and in Redis"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), $(workers_text); two instances from"
        echo "  bench/gatehouse-ratelimit.yaml.tmpl, one with \`rate_limit: {store: memory}\`, one with"
        echo "  \`rate_limit: {store: redis, on_store_error: deny}\` and \`redis: {url: redis://127.0.0.1:$REDIS_PORT/0}\`"
        echo "  (a Redis failure would answer 503 and count as a wrk error, not fall back to memory). Routes: \`/plain\`"
        echo "  no limit; \`/limited\` \`rate_limit: [{by: ip, limit: $RL_LIMIT, per: 1s}]\` (the most a limit can count,"
        echo "  never reached here, so nothing is refused, but every request takes a decision from the store; all of"
        echo "  wrk's connections come from 127.0.0.1, so one bucket). All proxy to the same origin."
        echo "- redis: $("$REDIS_SERVER" --version | awk '{ print $3 }' | sed 's/^v=//'), started by run.sh:" \
            "\`redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no\`; $keys key(s) at the end"
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response on every path (bench/nginx-origin.conf.tmpl)"
        echo "- checked before measuring, on both instances: /plain 200; /limited 200 with \`RateLimit-Limit: $RL_LIMIT\`;"
        echo "  /tight (1 per minute) 200 then 429 with Retry-After; Redis ran EVALSHA for the redis instance's limited"
        echo "  requests and none for the memory instance's."
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET, ${DURATION}s per run, $REPS reps"
        echo "  per target and connection count, order alternated per rep (plain memory redis, redis memory plain, ...),"
        echo "  ${WARMUP}s warm-up per target. \"plain\" and \"memory\" are served by the memory instance, \"redis\" by the"
        echo "  redis instance; the instance not under load is idle."
        echo "- CPU: user + system seconds over each run from /proc/PID/stat (utime, stime; all threads) of the"
        echo "  gatehouse instance under load and of redis-server. Redis ops/s: (total_commands_processed after - before"
        echo "  - the script's own 3 INFO) / wrk's duration; also INFO's instantaneous_ops_per_sec read half-way through."
        echo "  Redis counts the commands a script calls as commands: one script call is EVALSHA plus the script's TIME"
        echo "  and one GET and at most one SET per distinct bucket. Decisions asked while a worker's calls are out are"
        echo "  batched into one call, so EVALSHA / request (from INFO commandstats) is 1 for an unloaded store and"
        echo "  below 1 under load (1 / requests per call)."
        echo "- Targets (median req/s in the same run): memory >= 0.95 x plain; redis >= 0.70 x plain."
        echo "  On this noisy 2-core machine differences under ~15% are noise: read the per-rep ratios and the runs."
        echo
        echo "| conns | target | median req/s | median p50 ms | median p99 ms | req/s vs plain | p99 vs plain |"
        echo "|---:|---|---:|---:|---:|---:|---:|"
        for c in "${CONN_LIST[@]}"; do
            for name in "${RL_TARGETS[@]}"; do median_row "$c" "$name" plain; done
        done
        echo
        for c in "${CONN_LIST[@]}"; do
            pair_line "$c" memory plain 0.95
            pair_line "$c" redis plain 0.7
        done
        echo
        echo "CPU split and Redis load, medians over the reps (CPU seconds are user + system over one ${DURATION}s run):"
        echo
        store_load_table gatehouse EVALSHA "${RL_TARGETS[@]}"
        echo
        runs_table "All runs (\"ref\" = wrk straight against the origin, no gatehouse: the ceiling of this setup; CPU s = user + system):" \
            "| conns | rep | target | req/s | p50 ms | p99 ms | gatehouse CPU s | redis-server CPU s | Redis ops/s | instantaneous ops/s | EVALSHA / request | wrk errors |" \
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    } >"$report"
    publish "$report" ratelimit-latest
}

# ---------------------------------------------------------------- cache mode

CACHE_TTL=${CACHE_TTL:-60}    # seconds an entry stays fresh: route `cache.ttl`, nginx proxy_cache_valid
CACHE_ORIGIN_MAX=5            # origin requests a HIT target's run may cause (entries expiring) before it is flagged
CACHE_TMPFS=${CACHE_TMPFS:-/dev/shm} # where nginx's proxy_cache_path goes: must be a tmpfs

origin_requests() { # -> requests the origin has served, this read included (nginx stub_status)
    curl -sS --max-time 2 "${URL[origin]}origin-status" | awk 'NR == 3 { print $3; found = 1 } END { if (!found) exit 1 }' ||
        die "no request count from the origin's /origin-status"
}

cache_hits() { # BASE_URL -> gatehouse_cache_results_total with result="hit", summed over routes
    curl -sS --max-time 2 "$1/metrics" |
        awk '/^gatehouse_cache_results_total\{/ && /result="hit"/ { n += $NF } END { printf "%d", n }'
}

# cache_check NAME URL HEADER : NAME's first GET of URL answers HEADER: MISS, its second HEADER: HIT
# without reaching the origin.
cache_check() {
    local name=$1 url=$2 header=$3 o0 o1
    rl_expect "$name, 1st" "$url" 200 "^$header: miss\$"
    o0=$(origin_requests)
    rl_expect "$name, 2nd" "$url" 200 "^$header: hit\$"
    o1=$(origin_requests)
    ((o1 - o0 == 1)) || die "$name: the HIT reached the origin ($((o1 - o0 - 1)) origin requests)"
}

# cache_run TARGET CONNS REP : one measured wrk run of the cache mode (counted_run on the process
# serving TARGET, Redis GET counted), with the origin's requests and, for gatehouse, its cache
# HITs over the run; recorded.
cache_run() {
    local name=$1 c=$2 rep=$3 o0 o1 h0=- h1 origin hits=-
    o0=$(origin_requests)
    if [[ -n ${CACHE_BASE[$name]:-} ]]; then h0=$(cache_hits "${CACHE_BASE[$name]}"); fi
    counted_run "$name" "$c" "$rep" "${CACHE_PIDS[$name]}" get
    o1=$(origin_requests)
    origin=$((o1 - o0 - 1))
    if [[ $h0 != - ]]; then
        h1=$(cache_hits "${CACHE_BASE[$name]}")
        hits=$(awk -v h="$((h1 - h0))" -v r="$LAST_REQUESTS" 'BEGIN { if (r > 0) printf "%.3f", h / r; else print "-" }')
    fi
    CACHE_ORIGIN[$name:$c]+="$origin "
    if [[ $name != plain ]] && ((origin > CACHE_ORIGIN_MAX)); then
        CACHE_LEAKS+=("$name, $c connections, rep $rep: $origin origin requests")
        log "WARNING: $name served $origin requests from the origin during a run of cache HITs"
    fi
    record_counted_run "$name" "$c" "$rep" "${LABEL[$name]}" " $origin | $hits |"
    log "    $(fmt_int "$LAST_RPS") req/s, p99 $(fmt_ms "$LAST_P99_US") ms, errors: $LAST_ERRORS; origin requests $origin," \
        "HITs/request $hits; CPU s (user + sys) $name $RUN_PU + $RUN_PS, redis-server $RUN_RU + $RUN_RS; Redis $RUN_OPS ops/s, GET/request $RUN_CPR"
}

bench_cache() {
    local origin_port gh_mem_port gh1_port gh_redis_port nginx_port nw_port name c get0 get1 keys port workers
    if ! is_uint "$CACHE_TTL" || ((CACHE_TTL == 0)); then die "CACHE_TTL must be a positive integer, got '$CACHE_TTL'"; fi
    read -r origin_port gh_mem_port gh1_port gh_redis_port nginx_port nw_port REDIS_PORT <<<"$(free_ports 7)"
    declare -gA CACHE_PIDS CACHE_BASE CACHE_ORIGIN
    CACHE_LEAKS=()
    CACHE_TARGETS=(memory nginx redis plain)
    if [[ $ONE_WORKER == 1 ]]; then CACHE_TARGETS+=(memory-1w); fi
    if [[ $NGINX_PER_CORE == 1 ]]; then CACHE_TARGETS+=("$NGINX_NW"); fi
    LABEL=([memory]="memory (gatehouse /cached, store: memory)" [memory-1w]="memory-1w (the same, server.workers: 1)"
        [nginx]="nginx (proxy_cache, 1 worker)" [$NGINX_NW]="$NGINX_NW (proxy_cache, one worker per core)"
        [redis]="redis (gatehouse /cached, store: redis)" [plain]="plain (gatehouse /plain, redis instance)")
    [[ $(stat -f -c %T "$CACHE_TMPFS" 2>/dev/null) == tmpfs ]] || die "CACHE_TMPFS=$CACHE_TMPFS is not a tmpfs"
    CACHE_DIR=$(mktemp -d "$CACHE_TMPFS/gatehouse-bench-cache.XXXXXX")

    start_origin "$origin_port"
    CACHE_PIDS[origin]=$(nginx_worker "$SERVER_PID")

    log "starting redis-server (--save '' --appendonly no) on 127.0.0.1:$REDIS_PORT"
    start_redis redis "$REDIS_PORT"
    REDIS_PID=$SERVER_PID

    log "starting gatehouse with cache.store: memory on 127.0.0.1:$gh_mem_port"
    GH_NAME=gatehouse-memory start_gatehouse "$BENCH_DIR/gatehouse-cache.yaml.tmpl" "$gh_mem_port" \
        "ORIGIN_PORT=$origin_port" STORE=memory "TTL=${CACHE_TTL}s" REDIS=
    CACHE_PIDS[memory]=$SERVER_PID
    CACHE_BASE[memory]=http://127.0.0.1:$gh_mem_port
    wait_http gatehouse-memory "$SERVER_PID" "${CACHE_BASE[memory]}/plain" 200
    if [[ $ONE_WORKER == 1 ]]; then
        log "starting gatehouse with cache.store: memory and server.workers: 1 on 127.0.0.1:$gh1_port"
        GH_NAME=gatehouse-memory-1w GATEHOUSE_WORKERS=1 start_gatehouse "$BENCH_DIR/gatehouse-cache.yaml.tmpl" \
            "$gh1_port" "ORIGIN_PORT=$origin_port" STORE=memory "TTL=${CACHE_TTL}s" REDIS=
        CACHE_PIDS[memory-1w]=$SERVER_PID
        CACHE_BASE[memory-1w]=http://127.0.0.1:$gh1_port
        wait_http gatehouse-memory-1w "$SERVER_PID" "${CACHE_BASE[memory-1w]}/plain" 200
    fi

    log "starting gatehouse with cache.store: redis on 127.0.0.1:$gh_redis_port"
    GH_NAME=gatehouse-redis start_gatehouse "$BENCH_DIR/gatehouse-cache.yaml.tmpl" "$gh_redis_port" \
        "ORIGIN_PORT=$origin_port" STORE=redis "TTL=${CACHE_TTL}s" \
        "REDIS=$(printf '\nredis:\n  url: redis://127.0.0.1:%s/0\n' "$REDIS_PORT")"
    CACHE_PIDS[redis]=$SERVER_PID
    CACHE_PIDS[plain]=$SERVER_PID
    CACHE_BASE[redis]=http://127.0.0.1:$gh_redis_port
    wait_http gatehouse-redis "$SERVER_PID" "${CACHE_BASE[redis]}/plain" 200

    # nginx caches in files under a tmpfs; open_file_cache keeps a HIT's file open between requests.
    for name in nginx "$NGINX_NW"; do
        [[ " ${CACHE_TARGETS[*]} " == *" $name "* ]] || continue
        port=$nginx_port workers=1
        if [[ $name != nginx ]]; then port=$nw_port; workers=auto; fi
        log "starting $name (proxy_cache in $CACHE_DIR/$name, worker_processes $workers) on 127.0.0.1:$port"
        start_nginx "$name" "$BENCH_DIR/nginx-proxy.conf.tmpl" "$port" "ORIGIN_PORT=$origin_port" "NAME=$name" \
            "WORKERS=$workers" \
            "CACHE_ZONE=proxy_cache_path $CACHE_DIR/$name levels=1:2 keys_zone=bench:10m max_size=64m inactive=10m use_temp_path=off;" \
            "CACHE=proxy_cache bench; proxy_cache_valid 200 ${CACHE_TTL}s; proxy_cache_lock on; proxy_cache_use_stale updating; proxy_cache_background_update on; add_header X-Cache-Status \$upstream_cache_status always; open_file_cache max=1024 inactive=${CACHE_TTL}s; open_file_cache_valid ${CACHE_TTL}s;"
        wait_http "$name" "$SERVER_PID" "http://127.0.0.1:$port/plain" 200
        if [[ $workers == auto ]]; then CACHE_PIDS[$name]=$(nginx_worker "$SERVER_PID" "$(nproc)"); else CACHE_PIDS[$name]=$(nginx_worker "$SERVER_PID"); fi
        URL[$name]=http://127.0.0.1:$port/cached
    done
    URL[memory]=${CACHE_BASE[memory]}/cached
    URL[memory-1w]=${CACHE_BASE[memory-1w]:-}/cached
    URL[redis]=${CACHE_BASE[redis]}/cached
    URL[plain]=${CACHE_BASE[redis]}/plain

    # Each target must be what it is named before it is measured.
    log "checking: each cache answers MISS then HIT without the origin; Redis holds the redis instance's entries only"
    [[ $(origin_requests) -lt $(origin_requests) ]] || die "the origin's request count does not move"
    for name in "${CACHE_TARGETS[@]}"; do
        get0=$(redis_calls get)
        case $name in
            plain) rl_expect "plain /plain" "${URL[plain]}" 200 ;;
            nginx*) cache_check "$name /cached" "${URL[$name]}" x-cache-status ;;
            *) cache_check "$name /cached" "${URL[$name]}" x-cache ;;
        esac
        get1=$(redis_calls get)
        case $name in
            memory*) ((get1 == get0)) || die "the $name instance sent $((get1 - get0)) GET to Redis (expected none)" ;;
            redis) ((get1 > get0)) || die "the redis instance's MISS and HIT sent no GET to Redis" ;;
        esac
    done
    keys=$(redis_cmd --scan --pattern 'gwcache:*' | wc -l)
    ((keys > 0)) || die "no gwcache:* key in Redis after the redis instance's MISS"
    log "    Redis: GET from the redis instance only; $keys gwcache:* key(s)"

    warm_up origin "${CACHE_TARGETS[@]}"

    measure_rounds cache_run " | | | | | | |" "${CACHE_TARGETS[@]}"
    keys=$(redis_cmd dbsize | tr -d '\r')

    # ---- report
    local report=$TMP/cache.md peer leaks
    declare -A PEER=([memory]=nginx [memory-1w]=nginx [redis]=plain)
    {
        echo "# gatehouse response cache: HITs from memory vs nginx proxy_cache, HITs from Redis vs plain proxying"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), $(workers_text); instances from"
        echo "  bench/gatehouse-cache.yaml.tmpl: \`cache: {store: memory}\`$([[ $ONE_WORKER == 1 ]] && echo " (twice: as set, and with server.workers: 1)"), and"
        echo "  \`cache: {store: redis}\` with \`redis: {url: redis://127.0.0.1:$REDIS_PORT/0}\`. Routes: \`/cached\` with"
        echo "  \`cache: {ttl: ${CACHE_TTL}s}\`, \`/plain\` without cache; both to the same origin."
        echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), bench/nginx-proxy.conf.tmpl (the same forwarding headers and"
        echo "  X-Request-Id as in the other modes) plus \`proxy_cache_path\` in $CACHE_TMPFS ($(stat -f -c %T "$CACHE_TMPFS"))"
        echo "  \`keys_zone=bench:10m\`, \`proxy_cache_valid 200 ${CACHE_TTL}s\`, \`proxy_cache_lock on\`,"
        echo "  \`proxy_cache_use_stale updating\`, \`proxy_cache_background_update on\`, \`open_file_cache\`,"
        echo "  \`add_header X-Cache-Status \$upstream_cache_status\`; 1 worker$([[ $NGINX_PER_CORE == 1 ]] && echo ", and $NGINX_NW with one per core")."
        echo "  No \`proxy_ignore_headers\`: the origin sends no Cache-Control, Expires, Set-Cookie or X-Accel-Expires."
        echo "- redis: $("$REDIS_SERVER" --version | awk '{ print $3 }' | sed 's/^v=//'), started by run.sh:" \
            "\`redis-server --bind 127.0.0.1 --port $REDIS_PORT --save '' --appendonly no\`; $keys key(s) at the end"
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response (bench/nginx-origin.conf.tmpl), no caching headers"
        echo "- checked before measuring: every cache answers its first GET of /cached with MISS and its second"
        echo "  with HIT (\`X-Cache\`; nginx: \`X-Cache-Status\`) without an origin request (stub_status count); Redis"
        echo "  got GET from the redis instance and none from the memory instances, and holds \`gwcache:*\` keys."
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET, ${DURATION}s per run, $REPS reps"
        echo "  per target and connection count, order alternated per rep ($(echo "${CACHE_TARGETS[*]}"), then reversed, ...),"
        echo "  ${WARMUP}s warm-up per target. The instances and nginx not under load are idle."
        echo "- per run: origin requests (stub_status, the script's reads left out; a HIT target should cause none"
        echo "  but the refresh of an expired entry; more than $CACHE_ORIGIN_MAX is flagged); HITs / request from gatehouse's"
        echo "  gatehouse_cache_results_total{result=\"hit\"}; CPU (user + system, /proc/PID/stat) of the process under"
        echo "  load (gatehouse instance, or nginx's workers) and of redis-server; Redis ops/s as in the ratelimit mode."
        echo "- Targets (median req/s in the same run): memory >= 1.20 x nginx; redis >= 0.70 x plain."
        echo "  On this noisy 2-core machine differences under ~15% are noise: read the per-rep ratios and the runs."
        echo
        echo "| conns | target | median req/s | median p50 ms | median p99 ms | req/s / peer | p99 / peer | peer | median origin requests per run |"
        echo "|---:|---|---:|---:|---:|---:|---:|---|---:|"
        for c in "${CONN_LIST[@]}"; do
            for name in "${CACHE_TARGETS[@]}"; do
                peer=${PEER[$name]:--}
                median_row "$c" "$name" "$peer" " $peer | $(median_of CACHE_ORIGIN "$name:$c") |"
            done
        done
        echo
        for c in "${CONN_LIST[@]}"; do
            pair_line "$c" memory nginx 1.2
            if [[ $ONE_WORKER == 1 ]]; then pair_line "$c" memory-1w nginx 1.2 "one worker each"; fi
            if [[ $NGINX_PER_CORE == 1 ]]; then pair_line "$c" memory "$NGINX_NW" 1.2 "one worker per core each"; fi
            pair_line "$c" redis plain 0.7
        done
        if ((${#CACHE_LEAKS[@]})); then
            echo
            leaks=$(printf '%s; ' "${CACHE_LEAKS[@]}")
            echo "**WARNING: cache HITs reached the origin:** ${leaks%; }"
        fi
        echo
        echo "CPU split and Redis load, medians over the reps (CPU seconds are user + system over one ${DURATION}s run;"
        echo "\"proxy\" is the gatehouse instance or the nginx workers serving the target):"
        echo
        store_load_table proxy GET "${CACHE_TARGETS[@]}"
        echo
        runs_table "All runs (\"ref\" = wrk straight against the origin, no proxy: the ceiling of this setup; CPU s = user + system):" \
            "| conns | rep | target | req/s | p50 ms | p99 ms | proxy CPU s | redis-server CPU s | Redis ops/s | instantaneous ops/s | GET / request | origin requests | HITs / request | wrk errors |" \
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    } >"$report"
    publish "$report" cache-latest
    if ((${#CACHE_LEAKS[@]})); then
        log "cache HITs reached the origin in ${#CACHE_LEAKS[@]} run(s); exiting with status 4"
        exit 4
    fi
}

# ---------------------------------------------------------------- instr mode

# cachegrind_counts LOG -> "instructions I1_misses D1_misses" from valgrind's cachegrind summary.
cachegrind_counts() {
    awk '$2 == "I" && $3 == "refs:" { gsub(",", "", $4); i = $4 }
         $2 == "I1" && $3 == "misses:" { gsub(",", "", $4); m = $4 }
         $2 == "D1" && $3 == "misses:" { gsub(",", "", $4); d = $4 }
         END { if (i == "" || m == "" || d == "") exit 1; print i, m, d }' "$1"
}

# stop_and_wait PID NAME : SIGTERM, then waits (60 s) until PID has exited, so valgrind has
# written its summary.
stop_and_wait() {
    local pid=$1 i st
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 600; i++)); do
        st=$(ps -o stat= -p "$pid" 2>/dev/null || true)
        if [[ -z $st || $st == Z* ]]; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
    die "$2 did not exit within 60 s of SIGTERM"
}

# instr_run NAME CONNS : starts NAME (gatehouse or nginx, one worker each) under cachegrind on
# a free port, loads it with wrk at CONNS connections for DURATION seconds (CONNS 0: only the
# start-up probe), stops it; sets LAST_COUNTS ("instructions I1_misses D1_misses") and
# LAST_REQUESTS.
instr_run() {
    local name=$1 conns=$2 tag=$1-c$2 port pid
    port=$(free_ports 1)
    LAUNCHER=(valgrind --tool=cachegrind --cache-sim=yes
        "--cachegrind-out-file=$TMP/cachegrind-$tag.out" "--log-file=$TMP/valgrind-$tag.log")
    case $name in
        gatehouse)
            GH_NAME=$tag GATEHOUSE_WORKERS=1 start_gatehouse "$BENCH_DIR/gatehouse.yaml.tmpl" "$port" \
                "ORIGIN_PORT=$INSTR_ORIGIN_PORT"
            ;;
        nginx)
            # Without a master process the one process valgrind runs is the one that serves.
            NGINX_GLOBAL="master_process off;" start_nginx "$tag" "$BENCH_DIR/nginx-proxy.conf.tmpl" \
                "$port" "ORIGIN_PORT=$INSTR_ORIGIN_PORT" "NAME=$tag" WORKERS=1
            ;;
    esac
    LAUNCHER=()
    pid=$SERVER_PID
    URL[$name]="http://127.0.0.1:$port/"
    wait_http "$tag" "$pid" "${URL[$name]}" 200 60
    LAST_REQUESTS=0
    if ((conns > 0)); then run_wrk "$name" "$conns" "$DURATION" cachegrind; fi
    stop_and_wait "$pid" "$tag"
    LAST_COUNTS=$(cachegrind_counts "$TMP/valgrind-$tag.log") ||
        { tail -n 20 "$TMP/valgrind-$tag.log" >&2; die "no cachegrind summary in valgrind-$tag.log"; }
}

# per_request "BASELINE COUNTS" "LOADED COUNTS" REQUESTS -> the loaded run's counts less the
# baseline's, per request
per_request() {
    awk -v b="$1" -v l="$2" -v r="$3" 'BEGIN {
        split(b, x, " "); split(l, y, " ")
        if (r <= 0) { print "- - -"; exit }
        printf "%.0f %.0f %.0f", (y[1] - x[1]) / r, (y[2] - x[2]) / r, (y[3] - x[3]) / r }'
}

bench_instr() {
    local c name per
    read -r INSTR_ORIGIN_PORT <<<"$(free_ports 1)"
    start_origin "$INSTR_ORIGIN_PORT"

    declare -A BASELINE PER REQUESTS
    for name in gatehouse nginx; do
        log "baseline: $name under cachegrind, start-up, probe and shutdown only"
        instr_run "$name" 0
        BASELINE[$name]=$LAST_COUNTS
    done
    for c in "${CONN_LIST[@]}"; do
        for name in gatehouse nginx; do
            log "$name under cachegrind, $c connections, ${DURATION}s"
            instr_run "$name" "$c"
            PER[$name:$c]=$(per_request "${BASELINE[$name]}" "$LAST_COUNTS" "$LAST_REQUESTS")
            REQUESTS[$name:$c]=$LAST_REQUESTS
            log "    $LAST_REQUESTS requests; per request (instructions, I1 misses, D1 misses): ${PER[$name:$c]}"
        done
    done

    local report=$TMP/report.md g n
    {
        echo "# gatehouse vs nginx: user-space instructions and cache misses per request"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr)"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), server.workers: 1"
        echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker, master_process off, upstream keepalive 512 (bench/nginx-proxy.conf.tmpl)"
        echo "- origin: nginx, 1 worker, fixed 100-byte 200 response (bench/nginx-origin.conf.tmpl), not measured"
        echo "- tool: $(valgrind --version) --tool=cachegrind --cache-sim=yes; simulated caches:" \
            "$(cg_annotate "$TMP/cachegrind-gatehouse-c0.out" 2>/dev/null | awk '/^(I1|D1|LL) cache:/ { $1 = $1; printf "%s%s", sep, $0; sep = "; " }')"
        echo "- load: $("$WRK" -v 2>&1 | head -n 1 | cut -d' ' -f1-2), -t$WRK_THREADS, HTTP/1.1 keep-alive, GET /, ${DURATION}s per run; one proxy at a time, a fresh process per run"
        echo "- counted: the proxy's own process in user space (its code, libraries, allocator); the kernel's work for it"
        echo "  (system calls, TCP) is not. Each figure is (loaded run - baseline run) / requests, the baseline being"
        echo "  start-up, the readiness probe and shutdown. Under valgrind a proxy runs far slower, so the figures say how"
        echo "  much work a request takes, not how fast it is served; they do not move with the machine's load."
        echo
        echo "| conns | proxy | requests | instructions / req | I1 misses / req | D1 misses / req |"
        echo "|---:|---|---:|---:|---:|---:|"
        for c in "${CONN_LIST[@]}"; do
            for name in gatehouse nginx; do
                read -r -a per <<<"${PER[$name:$c]}"
                echo "| $c | $name | ${REQUESTS[$name:$c]} | ${per[0]} | ${per[1]} | ${per[2]} |"
            done
            read -r -a g <<<"${PER[gatehouse:$c]}"
            read -r -a n <<<"${PER[nginx:$c]}"
            echo "| $c | ratio gatehouse / nginx | | $(ratio "${g[0]}" "${n[0]}") | $(ratio "${g[1]}" "${n[1]}") | $(ratio "${g[2]}" "${n[2]}") |"
        done
        if ((ERRORS_SEEN)); then
            echo
            echo "**WARNING: wrk reported socket errors or non-2xx responses in some runs; see bench/out/instr-wrk.txt.**"
        fi
    } >"$report"
    publish "$report" instr
}

# ---------------------------------------------------------------- idle mode

# shellcheck source=bench/idle.sh
source "$BENCH_DIR/idle.sh"

# ---------------------------------------------------------------- main

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
build
case $MODE in
    rps) bench_rps ;;
    stream) bench_stream ;;
    reload) bench_reload ;;
    auth) bench_auth ;;
    ratelimit) bench_ratelimit ;;
    cache) bench_cache ;;
    instr) bench_instr ;;
    idle) bench_idle ;;
esac
