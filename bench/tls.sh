#!/usr/bin/env bash
# TLS and HTTP/2 benchmark: gatehouse vs HAProxy vs nginx, one worker each, proxying the same
# origin with the same forwarding headers. See bench/README.md.
#
#   bench/tls.sh            both parts below
#   bench/tls.sh h2         req/s of h2load (H2_CONNS connections x H2_STREAMS streams, one
#                           thread) over h2c (prior knowledge) and over TLS (ALPN h2)
#   bench/tls.sh handshake  new TLS connections per second: wrk sends one request per connection
#                           (`Connection: close`), so every request is a full TLS handshake
#
# The three proxies use one certificate (ECDSA P-256, made with openssl in the temp dir) and
# negotiate TLS 1.3 with X25519 with both clients; the report prints what each negotiated.
# Upstream: one nginx origin (bench/nginx-origin.conf.tmpl) over HTTP/1.1 keep-alive.
#
# Environment:
#   REPS=3          repetitions per proxy and part, order rotated per repetition (medians)
#   DURATION=10     seconds per run
#   H2_CONNS=64     h2load connections
#   H2_STREAMS=4    h2load concurrent streams per connection
#   HS_CONNS=16     wrk connections of the handshake part
#   NO_BUILD=1      do not run `cargo build --release` (use the existing binary)
#   KEEP_TMP=1      keep the temp dir (configs, logs, raw client output)
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
H2LOAD=${H2LOAD:-h2load}
GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/gatehouse

REPS=${REPS:-3}
DURATION=${DURATION:-10}
H2_CONNS=${H2_CONNS:-64}
H2_STREAMS=${H2_STREAMS:-4}
HS_CONNS=${HS_CONNS:-16}
NO_BUILD=${NO_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

CMDLINE=""
for var in REPS DURATION H2_CONNS H2_STREAMS HS_CONNS NO_BUILD KEEP_TMP CARGO_TARGET_DIR; do
    if [[ -n ${!var+x} ]] && printenv "$var" >/dev/null; then
        CMDLINE+="$var=$(printf '%q' "${!var}") "
    fi
done
CMDLINE+="bench/tls.sh${1:+ $1}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'tls-bench: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
source "$BENCH_DIR/lib/common.sh"

PARTS=(h2 handshake)
case ${1:-} in
    "") ;;
    h2 | handshake) PARTS=("$1") ;;
    -h | --help | help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (h2, handshake, or nothing for both; see --help)" ;;
esac

for var in REPS DURATION H2_CONNS H2_STREAMS HS_CONNS; do
    if ! is_uint "${!var}" || ((${!var} == 0)); then die "$var must be a positive integer, got '${!var}'"; fi
done
[[ -x $NGINX ]] || die "nginx not found at $NGINX (set NGINX=...)"
[[ -x $HAPROXY ]] || die "haproxy not found at $HAPROXY (set HAPROXY=...)"
command -v "$WRK" >/dev/null || die "wrk not found (set WRK=...)"
command -v "$H2LOAD" >/dev/null || die "h2load not found (Debian: apt-get install nghttp2-client)"
command -v openssl >/dev/null || die "openssl not found"
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"

# ---------------------------------------------------------------- processes and cleanup

TMP=$(mktemp -d -t gatehouse-tls.XXXXXX)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started
    if ((rc != 0)); then tail_logs "$TMP"/*.log "$TMP"/*/*.log; fi
    if [[ $KEEP_TMP == 1 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
on_exit cleanup

# ---------------------------------------------------------------- servers

build

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >"$TMP/openssl.log" 2>&1 ||
    die "openssl could not make the certificate: $(cat "$TMP/openssl.log")"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"

read -r ORIGIN_PORT GH_H2C GH_TLS HA_H2C HA_TLS NG_H2C NG_TLS <<<"$(free_ports 7)"
mkdir -p "$TMP/nginx-tmp"
render "$BENCH_DIR/nginx-origin.conf.tmpl" "$TMP/origin.conf" "DIR=$TMP" "PORT=$ORIGIN_PORT" \
    "USER_DIRECTIVE=$USER_DIRECTIVE" "WORKER_CONNECTIONS=8192"
log "starting the origin (nginx, 1 worker) on 127.0.0.1:$ORIGIN_PORT"
start_server origin "$NGINX" -p "$TMP" -c "$TMP/origin.conf"
wait_http origin "$SERVER_PID" "http://127.0.0.1:$ORIGIN_PORT/" 200

render "$BENCH_DIR/gatehouse-tls.yaml.tmpl" "$TMP/gatehouse.yaml" "PORT=$GH_H2C" "TLS_PORT=$GH_TLS" \
    "ORIGIN_PORT=$ORIGIN_PORT" "CERT=$TMP/cert.pem" "KEY=$TMP/key.pem"
log "starting gatehouse (1 worker): h2c on $GH_H2C, TLS on $GH_TLS"
run_gatehouse "$TMP/gatehouse.yaml"
GATEHOUSE_PID=$SERVER_PID
wait_http gatehouse "$SERVER_PID" "http://127.0.0.1:$GH_H2C/" 200

render "$BENCH_DIR/haproxy-tls.cfg.tmpl" "$TMP/haproxy.cfg" "DIR=$TMP" "H2C_PORT=$HA_H2C" \
    "TLS_PORT=$HA_TLS" "ORIGIN_PORT=$ORIGIN_PORT" "PEM=$TMP/haproxy.pem"
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
    { cat "$TMP/haproxy-check.log" >&2; die "haproxy rejected its config"; }
log "starting HAProxy (1 thread): h2c on $HA_H2C, TLS on $HA_TLS"
start_server haproxy "$HAPROXY" -db -f "$TMP/haproxy.cfg"
HAPROXY_PID=$SERVER_PID

render "$BENCH_DIR/nginx-tls.conf.tmpl" "$TMP/nginx.conf" "DIR=$TMP" "H2C_PORT=$NG_H2C" \
    "TLS_PORT=$NG_TLS" "ORIGIN_PORT=$ORIGIN_PORT" "CERT=$TMP/cert.pem" "KEY=$TMP/key.pem" \
    "USER_DIRECTIVE=$USER_DIRECTIVE"
"$NGINX" -t -q -p "$TMP" -c "$TMP/nginx.conf" >"$TMP/nginx-check.log" 2>&1 ||
    { cat "$TMP/nginx-check.log" >&2; die "nginx rejected its config"; }
log "starting nginx (1 worker): h2c on $NG_H2C, TLS on $NG_TLS"
start_server nginx "$NGINX" -p "$TMP" -c "$TMP/nginx.conf"
NGINX_PID=$SERVER_PID

h2c_answers() { # PORT -> 0 when GET / over h2c answers 200
    [[ $(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 1 --http2-prior-knowledge \
        "http://127.0.0.1:$1/" 2>/dev/null || true) == "200 2" ]]
}
tls_h2_answers() { # PORT -> 0 when GET / over TLS with ALPN h2 answers 200 over HTTP/2
    [[ $(curl -sk -o /dev/null -w '%{http_code} %{http_version}' --max-time 1 --http2 \
        "https://127.0.0.1:$1/" 2>/dev/null || true) == "200 2" ]]
}
declare -A H2C_PORT=([gatehouse]=$GH_H2C [haproxy]=$HA_H2C [nginx]=$NG_H2C)
declare -A TLS_PORT=([gatehouse]=$GH_TLS [haproxy]=$HA_TLS [nginx]=$NG_TLS)
declare -A PID=([gatehouse]=$GATEHOUSE_PID [haproxy]=$HAPROXY_PID [nginx]=$NGINX_PID)
PROXIES=(gatehouse haproxy nginx)
for p in "${PROXIES[@]}"; do
    await_up "$p" "${PID[$p]}" 10 "200 over h2c" h2c_answers "${H2C_PORT[$p]}"
    await_up "$p" "${PID[$p]}" 10 "200 over TLS + h2" tls_h2_answers "${TLS_PORT[$p]}"
done

negotiated() { # PORT -> "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519" as openssl s_client saw it
    openssl s_client -connect "127.0.0.1:$1" -servername localhost -alpn h2 </dev/null 2>/dev/null |
        awk '/^New, / { proto = $2; cipher = $5 } /^Server Temp Key:/ { key = $4 } END { sub(",", "", proto); sub(",", "", key); print proto, cipher, key }'
}

# ---------------------------------------------------------------- runs

rotated() { # REP -> the proxies, rotated by REP so none always goes first
    local i n=${#PROXIES[@]}
    for ((i = 0; i < n; i++)); do printf '%s ' "${PROXIES[$(((i + $1) % n))]}"; done
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

h2load_run() { # URL OUT -> req/s; dies unless every request got a 2xx
    "$H2LOAD" -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" "$1" >"$2" 2>&1 || die "h2load failed: $(tail -5 "$2")"
    local rps failed non2xx
    rps=$(awk '/^finished in/ { print $4 }' "$2")
    failed=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$2")
    non2xx=$(awk '/^status codes:/ { print $5 + $7 + $9 }' "$2")
    [[ -n $rps && $failed == 0 && $non2xx == 0 ]] || die "h2load saw failures or non-2xx answers: $(grep -E '^(requests|status codes)' "$2")"
    echo "$rps"
}

wrk_close_run() { # URL OUT -> connections (= requests) per second; dies on errors or non-2xx
    "$WRK" -t1 -c"$HS_CONNS" -d"${DURATION}s" -H 'Connection: close' "$1" >"$2" 2>&1 || die "wrk failed: $(cat "$2")"
    ! grep -qE '^  (Socket errors|Non-2xx)' "$2" || die "wrk saw errors: $(grep -E '^  (Socket errors|Non-2xx)' "$2")"
    awk '/^Requests\/sec:/ { print $2 }' "$2"
}

declare -A H2C TLS HS
mkdir -p "$TMP/runs"
for ((rep = 1; rep <= REPS; rep++)); do
    for p in $(rotated "$rep"); do
        for part in "${PARTS[@]}"; do
            case $part in
                h2)
                    log "rep $rep: $p, h2load -c$H2_CONNS -m$H2_STREAMS over h2c"
                    H2C[$p]+="$(h2load_run "http://127.0.0.1:${H2C_PORT[$p]}/" "$TMP/runs/$p-h2c-$rep.txt") "
                    log "rep $rep: $p, h2load -c$H2_CONNS -m$H2_STREAMS over TLS"
                    TLS[$p]+="$(h2load_run "https://127.0.0.1:${TLS_PORT[$p]}/" "$TMP/runs/$p-tls-$rep.txt") "
                    ;;
                handshake)
                    log "rep $rep: $p, wrk -c$HS_CONNS with Connection: close over TLS"
                    HS[$p]+="$(wrk_close_run "https://127.0.0.1:${TLS_PORT[$p]}/" "$TMP/runs/$p-hs-$rep.txt") "
                    ;;
            esac
        done
    done
done

# ---------------------------------------------------------------- report

REPORT=$TMP/report.md
{
    echo "# gatehouse TLS and HTTP/2 benchmark"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- host: $(nproc) cores, $(uname -sr); load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $("$HAPROXY" -v | head -n1 | cut -d' ' -f1-3); $("$NGINX" -v 2>&1); $("$H2LOAD" --version | head -n1)"
    echo "- every proxy: one worker, HTTP/1.1 keep-alive to one nginx origin (100-byte answers), the same forwarding headers"
    for p in "${PROXIES[@]}"; do echo "- $p negotiated: $(negotiated "${TLS_PORT[$p]}")"; done
    echo
    if [[ " ${PARTS[*]} " == *" h2 "* ]]; then
        echo "## h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D$DURATION (req/s, median of $REPS)"
        echo
        echo "| proxy | h2c | per rep | TLS (ALPN h2) | per rep |"
        echo "|---|---:|---|---:|---|"
        for p in "${PROXIES[@]}"; do
            # shellcheck disable=SC2086
            echo "| $p | $(median ${H2C[$p]}) | ${H2C[$p]}| $(median ${TLS[$p]}) | ${TLS[$p]}|"
        done
        echo
        # shellcheck disable=SC2086
        echo "gatehouse / HAProxy: h2c **$(ratio "$(median ${H2C[gatehouse]})" "$(median ${H2C[haproxy]})")**, TLS **$(ratio "$(median ${TLS[gatehouse]})" "$(median ${TLS[haproxy]})")** (target >= 1.0); gatehouse / nginx: h2c $(ratio "$(median ${H2C[gatehouse]})" "$(median ${H2C[nginx]})"), TLS $(ratio "$(median ${TLS[gatehouse]})" "$(median ${TLS[nginx]})")"
        echo
    fi
    if [[ " ${PARTS[*]} " == *" handshake "* ]]; then
        echo "## New TLS connections per second: wrk -t1 -c$HS_CONNS -d${DURATION}s, Connection: close (median of $REPS)"
        echo
        echo "| proxy | handshakes/s | per rep |"
        echo "|---|---:|---|"
        for p in "${PROXIES[@]}"; do
            # shellcheck disable=SC2086
            echo "| $p | $(median ${HS[$p]}) | ${HS[$p]}|"
        done
        echo
        # shellcheck disable=SC2086
        echo "gatehouse / nginx: **$(ratio "$(median ${HS[gatehouse]})" "$(median ${HS[nginx]})")**; gatehouse / HAProxy: $(ratio "$(median ${HS[gatehouse]})" "$(median ${HS[haproxy]})")"
    fi
} >"$REPORT"
mkdir -p "$OUT_DIR"
cp "$REPORT" "$OUT_DIR/tls-latest.md"
echo
cat "$REPORT"
echo
log "written to bench/out/tls-latest.md"
