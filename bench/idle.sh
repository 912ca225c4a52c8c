# bench/run.sh idle: memory per idle keep-alive connection, sourced by bench/run.sh.
#
# For each protocol (HTTP/1.1, then h2c), each rep and each proxy in turn (gatehouse with one
# worker, nginx with one worker, HAProxy with one thread), a fresh proxy in front of the same
# origin:
#   1. answers one request; its RSS then is "before";
#   2. bench/idle_client.py opens IDLE_CONNS connections, one request each, and keeps them idle;
#      once all have their answer, RSS is "held" and (held - before) / IDLE_CONNS is the memory
#      per idle connection;
#   3. the client checks that the proxy kept them all open, closes them, and exits; RSS 5 s later
#      is "after" (memory taken at the peak and given back, or not);
#   4. the proxy is stopped, so every run starts from the same state.

# 10 000 by default, fewer when the open-file limit is lower than HAProxy needs for them: it
# reserves two descriptors per connection it admits (20 000 here allows 9 000).
IDLE_FD_LIMIT=$(ulimit -Hn)
if [[ $IDLE_FD_LIMIT == unlimited ]] || ((IDLE_FD_LIMIT >= 2 * 10000 + 2000)); then
    IDLE_CONNS=${IDLE_CONNS:-10000}
else
    IDLE_CONNS=${IDLE_CONNS:-$(((IDLE_FD_LIMIT - 2000) / 2 / 1000 * 1000))}
fi
IDLE_PROTOS=${IDLE_PROTOS:-h1 h2c}
IDLE_SETTLE=${IDLE_SETTLE:-5}

# stop_group PGID NAME : SIGTERM to the process group, SIGKILL after 10 s.
stop_group() {
    local pgid=$1 i
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do group_alive "$pgid" || return 0; sleep 0.1; done
    log "$2 did not stop on SIGTERM; sending SIGKILL"
    kill -KILL -- "-$pgid" 2>/dev/null || true
}

# idle_start NAME ORIGIN_PORT : starts proxy NAME on free ports; sets IDLE_PGID, IDLE_PIDS (the
# processes whose memory counts), IDLE_H1_PORT and IDLE_H2C_PORT.
idle_start() {
    local name=$1 origin_port=$2 port h2c_port
    read -r port h2c_port <<<"$(free_ports 2)"
    case $name in
        gatehouse)
            GH_NAME=idle-gatehouse GATEHOUSE_WORKERS=${GATEHOUSE_WORKERS:-1} \
                start_gatehouse "$BENCH_DIR/gatehouse.yaml.tmpl" "$port" "ORIGIN_PORT=$origin_port"
            h2c_port=$port # HTTP/1.1 and h2c share gatehouse's listener
            ;;
        nginx)
            WORKER_CONNECTIONS=$((IDLE_CONNS + 1024)) start_nginx idle-nginx "$BENCH_DIR/nginx-proxy.conf.tmpl" "$port" \
                "ORIGIN_PORT=$origin_port" NAME=idle-nginx WORKERS=1 "H2C_PORT=$h2c_port"
            ;;
        haproxy) start_haproxy idle-haproxy "$port" "$h2c_port" "$origin_port" ;;
    esac
    IDLE_PGID=$SERVER_PID
    wait_http "idle-$name" "$SERVER_PID" "http://127.0.0.1:$port/" 200
    case $name in
        nginx) IDLE_PIDS=$(nginx_worker "$SERVER_PID") ;;
        *) IDLE_PIDS=$SERVER_PID ;;
    esac
    IDLE_H1_PORT=$port
    IDLE_H2C_PORT=$h2c_port
}

# idle_run NAME PROTO : one measurement; appends "before held after hwm still_open ok" (KiB,
# counts) to IDLE_RESULT[NAME:PROTO].
idle_run() {
    local name=$1 proto=$2 port before held after hwm out client i line ok failed still
    idle_start "$name" "$IDLE_ORIGIN_PORT"
    if [[ $proto == h2c ]]; then port=$IDLE_H2C_PORT; else port=$IDLE_H1_PORT; fi
    sleep 1
    before=$(status_kib "$IDLE_PIDS" VmRSS)
    out=$TMP/idle-client-$name-$proto.out
    python3 "$BENCH_DIR/idle_client.py" --port "$port" --conns "$IDLE_CONNS" --proto "$proto" \
        >"$out" 2>>"$TMP/idle-client.log" &
    client=$!
    for ((i = 0; i < 3000; i++)); do
        grep -q '^READY' "$out" && break
        kill -0 "$client" 2>/dev/null || die "idle client exited early against $name ($proto): $(tail -n 5 "$TMP/idle-client.log")"
        sleep 0.1
    done
    line=$(grep '^READY' "$out") || die "idle client not ready within 300 s against $name ($proto)"
    ok=$(field "$line" ok)
    failed=$(field "$line" failed)
    ((failed == 0)) || { ERRORS_SEEN=1; log "WARNING: $name ($proto): $failed connections failed: $(tail -n 5 "$TMP/idle-client.log")"; }
    sleep 1
    held=$(status_kib "$IDLE_PIDS" VmRSS)
    kill -USR1 "$client"
    wait "$client" || die "idle client failed against $name ($proto)"
    still=$(awk '/^STILL_OPEN/ { print $2 }' "$out")
    if ((still != ok)); then ERRORS_SEEN=1; log "WARNING: $name ($proto) closed $((ok - still)) idle connections"; fi
    sleep "$IDLE_SETTLE"
    after=$(status_kib "$IDLE_PIDS" VmRSS)
    hwm=$(status_kib "$IDLE_PIDS" VmHWM)
    stop_group "$IDLE_PGID" "$name"
    IDLE_RESULT[$name:$proto]+="$before $held $after $hwm $still $ok;"
    log "    before $(mib "$before") MiB, held $(mib "$held") MiB ($(per_conn "$before" "$held" "$ok") KiB per connection), ${IDLE_SETTLE}s after closing $(mib "$after") MiB; $still of $ok still open at the end"
}

per_conn() { awk -v b="$1" -v h="$2" -v n="$3" 'BEGIN { if (n > 0) printf "%.2f", (h - b) / n; else print "-" }'; }

# idle_column NAME PROTO INDEX -> the median of field INDEX (1-based) over the runs
idle_column() {
    local runs values=() run fields
    IFS=';' read -r -a runs <<<"${IDLE_RESULT[$1:$2]}"
    for run in "${runs[@]}"; do
        read -r -a fields <<<"$run"
        values+=("${fields[$(($3 - 1))]}")
    done
    median "${values[@]}"
}

# idle_per_conn NAME PROTO -> median KiB per connection over the runs
idle_per_conn() {
    local runs values=() run f
    IFS=';' read -r -a runs <<<"${IDLE_RESULT[$1:$2]}"
    for run in "${runs[@]}"; do
        read -r -a f <<<"$run"
        values+=("$(per_conn "${f[0]}" "${f[1]}" "${f[5]}")")
    done
    median "${values[@]}"
}

bench_idle() {
    local fd_limit proxies=(gatehouse nginx haproxy) proto rep name n=0 total
    command -v "$HAPROXY" >/dev/null || die "haproxy not found at $HAPROXY (set HAPROXY=...)"
    is_uint "$IDLE_CONNS" && ((IDLE_CONNS > 0)) || die "IDLE_CONNS must be a positive integer"
    fd_limit=$(ulimit -n)
    # The client and each proxy hold one descriptor per connection, plus a few of their own.
    ((IDLE_CONNS + 200 <= fd_limit)) ||
        die "IDLE_CONNS=$IDLE_CONNS needs more open files than this shell allows ($fd_limit; the hard limit is $(ulimit -Hn))"
    declare -gA IDLE_RESULT=()
    IDLE_ORIGIN_PORT=$(free_ports 1)
    log "starting the origin (nginx, 1 worker) on 127.0.0.1:$IDLE_ORIGIN_PORT"
    start_nginx origin "$BENCH_DIR/nginx-origin.conf.tmpl" "$IDLE_ORIGIN_PORT"
    wait_http origin "$SERVER_PID" "http://127.0.0.1:$IDLE_ORIGIN_PORT/" 200

    read -r -a protos <<<"$IDLE_PROTOS"
    total=$((${#protos[@]} * REPS * ${#proxies[@]}))
    for proto in "${protos[@]}"; do
        for ((rep = 1; rep <= REPS; rep++)); do
            alternate_order "$rep" "${proxies[@]}"
            for name in "${ORDER[@]}"; do
                n=$((n + 1))
                log "[$n/$total] $name, $IDLE_CONNS idle $proto connections, rep $rep/$REPS"
                idle_run "$name" "$proto"
            done
        done
    done

    local report=$TMP/report.md kib
    declare -A KIB
    {
        echo "# Idle keep-alive connections: gatehouse vs nginx vs HAProxy"
        echo
        echo "- command: \`$CMDLINE\`"
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "- host: $(nproc) cores, $(uname -sr); open-file limit $fd_limit (hard limit $(ulimit -Hn))"
        echo "- gatehouse: $(describe_build) ($GATEHOUSE_BIN, release), server.workers: ${GATEHOUSE_WORKERS:-1}"
        echo "- nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker (bench/nginx-proxy.conf.tmpl; h2c on a second \`listen ... http2\`)"
        echo "- haproxy: $("$HAPROXY" -v 2>&1 | head -n 1 | awk '{ print $3 }'), nbthread 1 (bench/haproxy-proxy.cfg.tmpl; h2c on a second \`bind ... proto h2\`)"
        echo "- $IDLE_CONNS connections per run (bench/idle_client.py, 64 being opened at a time), one GET each (h2c: one stream), then idle; $REPS reps per proxy and protocol, a fresh proxy each run; medians"
        echo "- RSS of the serving process (nginx: its worker). before = after one request; held = with every connection open and idle;"
        echo "  KiB/conn = (held - before) / connections; after = ${IDLE_SETTLE} s after the client closed them all; peak = VmHWM."
        echo
        echo "| protocol | proxy | before MiB | held MiB | KiB / idle conn | peak MiB | after MiB | after / before | still open at the end |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        for proto in "${protos[@]}"; do
            for name in "${proxies[@]}"; do
                local before held after hwm still
                before=$(idle_column "$name" "$proto" 1)
                held=$(idle_column "$name" "$proto" 2)
                after=$(idle_column "$name" "$proto" 3)
                hwm=$(idle_column "$name" "$proto" 4)
                still=$(idle_column "$name" "$proto" 5)
                kib=$(idle_per_conn "$name" "$proto")
                KIB[$name:$proto]=$kib
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$proto" "$name" \
                    "$(mib "$before")" "$(mib "$held")" "$kib" "$(mib "$hwm")" "$(mib "$after")" \
                    "$(ratio "$after" "$before")" "$(fmt_int "$still") / $IDLE_CONNS"
            done
        done
        echo
        echo "Memory per idle connection, gatehouse / peer:"
        echo
        echo "| protocol | vs nginx | vs haproxy |"
        echo "|---|---:|---:|"
        for proto in "${protos[@]}"; do
            echo "| $proto | $(ratio "${KIB[gatehouse:$proto]}" "${KIB[nginx:$proto]}") | $(ratio "${KIB[gatehouse:$proto]}" "${KIB[haproxy:$proto]}") |"
        done
        echo
        echo "All runs (before, held, after, peak in KiB; still open; answered):"
        echo
        for proto in "${protos[@]}"; do
            for name in "${proxies[@]}"; do
                echo "- $proto $name: ${IDLE_RESULT[$name:$proto]}"
            done
        done
        if ((ERRORS_SEEN)); then
            echo
            echo "**WARNING: some connections failed or were closed by the proxy while idle; those figures are not comparable.**"
        fi
    } >"$report"
    mkdir -p "$OUT_DIR"
    cp "$report" "$OUT_DIR/idle.md"
    echo
    cat "$report"
    log "written to bench/out/idle.md"
    if ((ERRORS_SEEN)); then exit 2; fi
}
