#!/usr/bin/env bash
# Fault drill: one of two origins is killed under load, with retries and outlier detection on.
# See bench/README.md.
#
#   bench/fault-drill.sh
#
# Starts two origins (nginx, 1 worker each, bench/nginx-origin.conf.tmpl) and gatehouse
# (bench/gatehouse-fault.yaml.tmpl: one upstream over both, `retry` and `outlier_detection`),
# runs wrk against gatehouse, kills the first origin (SIGKILL to its process group, as a crash
# would) KILL_AFTER seconds in, and prints the requests wrk completed, the non-2xx answers, the
# socket errors and the failed share: (non-2xx + socket errors) / requests, in percent.
# The target (issue 16) is at most 0.1%; above it the script exits with status 2.
#
# Environment:
#   DURATION=20     seconds of the wrk run
#   CONNS=32        wrk connections (one thread: -t1)
#   KILL_AFTER=5    seconds into the run at which the first origin is killed
#   GATEHOUSE_WORKERS=  sets server.workers (default: unset, one worker thread per core)
#   NO_BUILD=1      do not run `cargo build --release` (use the existing binary)
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw wrk output)
#
# Every server runs from a fresh `mktemp -d` directory in its own process group; all of them
# are stopped on exit, failure, Ctrl-C or SIGTERM.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
OUT_DIR=$BENCH_DIR/out
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/gatehouse

DURATION=${DURATION:-20}
CONNS=${CONNS:-32}
KILL_AFTER=${KILL_AFTER:-5}
NO_BUILD=${NO_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
# The issue's bar: failed requests at most this share of all, in percent.
TARGET_PERCENT=0.1

CMDLINE=""
for var in DURATION CONNS KILL_AFTER GATEHOUSE_WORKERS NO_BUILD KEEP_TMP; do
    if [[ -n ${!var+x} ]] && printenv "$var" >/dev/null; then
        CMDLINE+="$var=$(printf '%q' "${!var}") "
    fi
done
CMDLINE+="bench/fault-drill.sh"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'fault-drill: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
source "$BENCH_DIR/lib/common.sh"

case ${1:-} in
    "") ;;
    -h | --help | help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (settings come from the environment; see --help)" ;;
esac

if ! is_uint "$DURATION" || ((DURATION == 0)); then die "DURATION must be a positive integer, got '$DURATION'"; fi
if ! is_uint "$CONNS" || ((CONNS == 0)); then die "CONNS must be a positive integer, got '$CONNS'"; fi
if ! is_uint "$KILL_AFTER" || ((KILL_AFTER >= DURATION)); then
    die "KILL_AFTER must be a whole number of seconds below DURATION ($DURATION), got '$KILL_AFTER'"
fi
if [[ -n ${GATEHOUSE_WORKERS:-} ]] && ! is_uint "$GATEHOUSE_WORKERS"; then die "GATEHOUSE_WORKERS must be a number"; fi
[[ -x $NGINX ]] || die "nginx not found at $NGINX (set NGINX=...)"
command -v "$WRK" >/dev/null || die "wrk not found (set WRK=...)"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"

# ---------------------------------------------------------------- processes and cleanup

TMP=$(mktemp -d -t gatehouse-fault.XXXXXX)
WRK_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started $WRK_PID
    if ((rc != 0 && rc != 2)); then tail_logs "$TMP"/*.log "$TMP"/*/*.log; fi
    if [[ $KEEP_TMP == 1 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
on_exit cleanup

# start_origin NAME PORT : an nginx origin in a directory of its own (the template names its
# pid and temp files after the directory); sets SERVER_PID.
start_origin() {
    local name=$1 port=$2 dir=$TMP/$1
    mkdir -p "$dir/nginx-tmp"
    render "$BENCH_DIR/nginx-origin.conf.tmpl" "$dir/origin.conf" "DIR=$dir" "PORT=$port" \
        "USER_DIRECTIVE=$USER_DIRECTIVE" "WORKER_CONNECTIONS=8192"
    "$NGINX" -t -q -p "$dir" -c "$dir/origin.conf" >"$dir/check.log" 2>&1 ||
        { cat "$dir/check.log" >&2; die "nginx rejected $name's config"; }
    log "starting origin $name (nginx, 1 worker) on 127.0.0.1:$port"
    LOG_DIR=$dir start_server "$name" "$NGINX" -p "$dir" -c "$dir/origin.conf"
    wait_http "$name" "$SERVER_PID" "http://127.0.0.1:$port/" 200
}

metric() { # NAME_AND_LABELS -> its value in gatehouse's /metrics (0 when absent)
    curl -s --max-time 2 "$GATEWAY_URL/metrics" |
        awk -v s="$1" '!found && index($0, s " ") == 1 { print $2; found = 1 } END { if (!found) print 0 }'
}

field() { # LINE KEY -> value of KEY=value in a FAULT line
    local kv
    for kv in $1; do [[ $kv == "$2="* ]] && { echo "${kv#*=}"; return 0; }; done
    echo ""
}

# ---------------------------------------------------------------- the drill

build

read -r PORT_A PORT_B PORT_GW <<<"$(free_ports 3)"
start_origin target-a "$PORT_A"
PGID_A=$SERVER_PID
start_origin target-b "$PORT_B"

render "$BENCH_DIR/gatehouse-fault.yaml.tmpl" "$TMP/gatehouse.yaml" "PORT=$PORT_GW" \
    "TARGET_A_PORT=$PORT_A" "TARGET_B_PORT=$PORT_B"
set_workers "$TMP/gatehouse.yaml"
log "starting gatehouse on 127.0.0.1:$PORT_GW"
run_gatehouse "$TMP/gatehouse.yaml"
GATEWAY_URL="http://127.0.0.1:$PORT_GW"
wait_http gatehouse "$SERVER_PID" "$GATEWAY_URL/" 200
# Both targets answer before the load starts (round robin: two requests reach both).
for _ in 1 2 3 4; do curl -s -o /dev/null --max-time 2 "$GATEWAY_URL/" || die "gatehouse did not answer"; done

log "wrk -t1 -c$CONNS -d${DURATION}s against gatehouse; killing target-a ${KILL_AFTER}s in"
"$WRK" -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s "$BENCH_DIR/fault-drill.lua" \
    "$GATEWAY_URL/" >"$TMP/wrk.txt" 2>&1 &
WRK_PID=$!
sleep "$KILL_AFTER"
kill -0 "$WRK_PID" 2>/dev/null || die "wrk ended before the kill (see $TMP/wrk.txt)"
KILLED_AT=$(date -u '+%H:%M:%S')
kill -KILL -- "-$PGID_A" 2>/dev/null || die "could not kill target-a's process group $PGID_A"
log "target-a (process group $PGID_A) killed at $KILLED_AT"
wait "$WRK_PID" || die "wrk failed: $(cat "$TMP/wrk.txt")"
WRK_PID=""

LINE=$(grep '^FAULT ' "$TMP/wrk.txt" || true)
[[ -n $LINE ]] || die "no FAULT line in wrk's output: $(cat "$TMP/wrk.txt")"
REQUESTS=$(field "$LINE" requests)
NON2XX=$(field "$LINE" non2xx)
SOCKET_ERRORS=$(($(field "$LINE" err_connect) + $(field "$LINE" err_read) + $(field "$LINE" err_write) + $(field "$LINE" err_timeout)))
FAILED=$((NON2XX + SOCKET_ERRORS))
SHARE=$(awk -v f="$FAILED" -v r="$REQUESTS" 'BEGIN { if (r == 0) print "nan"; else printf "%.4f", 100 * f / r }')
MET=$(awk -v s="$SHARE" -v t="$TARGET_PERCENT" 'BEGIN { print (s != "nan" && s <= t) ? "meets" : "misses" }')
RETRIES=$(metric 'gatehouse_upstream_retries_total{upstream="origins"}')
EXHAUSTED=$(metric 'gatehouse_upstream_retry_budget_exhausted_total{upstream="origins"}')
CONNECT_ERRORS=$(metric 'gatehouse_upstream_requests_total{upstream="origins",outcome="connect_error"}')
ATTEMPT_ERRORS=$(metric 'gatehouse_upstream_requests_total{upstream="origins",outcome="error"}')

REPORT=$TMP/report.md
{
    echo "# gatehouse fault drill"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- load: wrk -t1 -c$CONNS -d${DURATION}s, GET /; target-a killed (SIGKILL) ${KILL_AFTER}s in"
    echo "- gatehouse: bench/gatehouse-fault.yaml.tmpl (retry: attempts 2, on connect_error/502/503/504, budget 20%; outlier_detection: 5 failures)"
    echo
    echo "| requests | non-2xx | socket errors | failed share | target <= ${TARGET_PERCENT}% |"
    echo "|---:|---:|---:|---:|---|"
    echo "| $REQUESTS | $NON2XX | $SOCKET_ERRORS | ${SHARE}% | $MET |"
    echo
    echo "- statuses: $(field "$LINE" statuses); socket errors: connect $(field "$LINE" err_connect), read $(field "$LINE" err_read), write $(field "$LINE" err_write), timeout $(field "$LINE" err_timeout)"
    echo "- p99 $(field "$LINE" p99_us) µs, max $(field "$LINE" max_us) µs"
    echo "- gatehouse: retries $RETRIES, retries refused by the budget $EXHAUSTED, attempts with connect_error $CONNECT_ERRORS, with error $ATTEMPT_ERRORS"
} >"$REPORT"
mkdir -p "$OUT_DIR"
cp "$REPORT" "$OUT_DIR/fault-drill-latest.md"
cp "$TMP/wrk.txt" "$OUT_DIR/fault-drill-latest-wrk.txt"
echo
cat "$REPORT"
echo
log "written to bench/out/fault-drill-latest.md (raw wrk output: bench/out/fault-drill-latest-wrk.txt)"
if [[ $MET != meets ]]; then
    log "the failed share is above ${TARGET_PERCENT}%; exiting with status 2"
    exit 2
fi
