# Shell functions shared by bench/run.sh and bench/fault-drill.sh, sourced by both.
#
# Each script defines log, die and TMP (its temp dir) before it calls any of these, and stops
# what it started from its own cleanup with stop_started.

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# ---------------------------------------------------------------- process groups

GROUPS_STARTED=() # process-group ids (= leader pids) of every server started

group_alive() { # PGID -> 0 while any non-zombie process of the group exists
    local p
    for p in $(pgrep -g "$1" 2>/dev/null); do
        [[ $(ps -o stat= -p "$p" 2>/dev/null) == Z* ]] || return 0
    done
    return 1
}

# stop_started [PID...] : SIGTERM to each PID (helpers that are not servers), then to every
# started process group; SIGKILL to a group still alive 5 s later; reaps them all.
stop_started() {
    local pid i
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${GROUPS_STARTED[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${GROUPS_STARTED[@]}"; do
        for ((i = 0; i < 50; i++)); do group_alive "$pid" || break; sleep 0.1; done
        if group_alive "$pid"; then
            log "process group $pid did not stop on SIGTERM; sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
}

# on_exit FUNCTION : runs FUNCTION on exit, failure, Ctrl-C (status 130) or SIGTERM (143).
on_exit() {
    trap "$1" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# tail_logs FILE... : the last 20 lines of each non-empty FILE on stderr, named relative to TMP
# (an unmatched glob is passed over).
tail_logs() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s\n' "${f#"$TMP"/}" >&2
        tail -n 20 "$f" >&2
    done
}

# start_server NAME CMD... : runs CMD in its own session/process group (so it does not get the
# terminal's Ctrl-C directly and cleanup can stop it with its children), output to
# LOG_DIR/NAME.log (LOG_DIR defaults to TMP); sets SERVER_PID.
# LAUNCHER (an array, normally empty) goes in front of CMD, e.g. valgrind in instr mode.
LAUNCHER=()
start_server() {
    local name=$1
    shift
    setsid ${LAUNCHER[@]+"${LAUNCHER[@]}"} "$@" >"${LOG_DIR:-$TMP}/$name.log" 2>&1 </dev/null &
    SERVER_PID=$!
    GROUPS_STARTED+=("$SERVER_PID")
}

# ---------------------------------------------------------------- ports and readiness

# free_ports N : prints N distinct currently free loopback ports.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# await_up NAME PID SECONDS WHAT PROBE... : runs the command PROBE... every 0.1 s until it
# succeeds, dying if PID exits or SECONDS pass ("NAME did not answer WHAT"; a probe may leave a
# detail for that message in PROBE_NOTE); then checks that setsid made PID its own
# process-group leader (no fork), so stopping the group stops the server.
await_up() {
    local name=$1 pid=$2 secs=$3 what=$4 i
    shift 4
    PROBE_NOTE=""
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $name.log below)"
        if "$@"; then
            [[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]] ||
                die "$name (pid $pid) is not a process-group leader"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer $what within $secs s${PROBE_NOTE:+ ($PROBE_NOTE)}"
}

# http_answers URL EXPECTED_CODE|any : whether URL answers with that status (PROBE_NOTE: the
# status it gave).
http_answers() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null || true)
    PROBE_NOTE="last status: ${code:-none}"
    [[ $code != 000 && -n $code ]] && [[ $2 == any || $code == "$2" ]]
}

# wait_http NAME PID URL EXPECTED_CODE|any [SECONDS] : waits (default 10 s) until URL answers.
wait_http() {
    await_up "$1" "$2" "${5:-10}" "$4 on $3" http_answers "$3" "$4"
}

# ---------------------------------------------------------------- configs and the binary

# Started as root, nginx's workers would switch to nobody and lose the temp dir; the templates'
# @USER_DIRECTIVE@ keeps them root.
USER_DIRECTIVE=""
if ((EUID == 0)); then USER_DIRECTIVE="user root;"; fi

# render TEMPLATE OUT KEY=VALUE... : replaces @KEY@ with VALUE.
render() {
    local tmpl=$1 out=$2 kv text
    shift 2
    text=$(<"$tmpl")
    for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
    [[ $text != *@[A-Z_]*@* ]] || die "unfilled placeholder in $tmpl"
    printf '%s\n' "$text" >"$out"
}

# build : `cargo build --release` unless NO_BUILD=1; dies without a binary at GATEHOUSE_BIN.
build() {
    if [[ $NO_BUILD == 1 ]]; then
        log "NO_BUILD=1: using the existing $GATEHOUSE_BIN"
    else
        log "cargo build --release (may wait on the cargo lock if another build runs)"
        (cd "$REPO_DIR" && cargo build --release) || die "cargo build --release failed"
    fi
    [[ -x $GATEHOUSE_BIN ]] || die "no gatehouse binary at $GATEHOUSE_BIN"
}

set_workers() { # CONFIG : adds server.workers when GATEHOUSE_WORKERS is set
    [[ -z ${GATEHOUSE_WORKERS:-} ]] && return 0
    [[ $GATEHOUSE_WORKERS =~ ^[0-9]+$ ]] || die "GATEHOUSE_WORKERS must be a number"
    sed -i "s/^server:\$/server:\n  workers: $GATEHOUSE_WORKERS/" "$1"
    grep -q "^  workers: $GATEHOUSE_WORKERS\$" "$1" || die "could not set workers in $1"
}

run_gatehouse() { # CONFIG : checks CONFIG (with its routes_dir) and starts gatehouse on it; sets SERVER_PID
    "$GATEHOUSE_BIN" check -c "$1" >"$TMP/gatehouse-check.log" 2>&1 ||
        { cat "$TMP/gatehouse-check.log" >&2; die "gatehouse check rejected the generated config"; }
    start_server "${GH_NAME:-gatehouse}" "$GATEHOUSE_BIN" run -c "$1"
}
