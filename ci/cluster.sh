#!/usr/bin/env bash
# A local Gregor cluster on 127.0.0.1, for trying things by hand and for failover tests.
#
# Usage: ci/cluster.sh COMMAND [ARG]
#   start [N]     build the release gregor, start N nodes (default 3; 1 to 9), wait until
#                 each is ready, print the bootstrap servers; refuses if one is running
#   stop          SIGTERM every node, wait up to 15 s, then SIGKILL what is left
#   status        each node up or down, with its pid, ports and data directory
#   kill ID       SIGKILL node ID (its data stays), to test failover
#   restart ID    stop node ID if it runs (SIGTERM), start it again on the same data
#   -h, --help    this text
# Node ID (1..N) takes Kafka port GREGOR_CLUSTER_PORT+ID-1 and peer port
# GREGOR_CLUSTER_PEER_PORT+ID-1, keeps its data in DIR/n<ID>, logs to DIR/n<ID>.log and its
# pid in DIR/n<ID>.pid, where DIR is GREGOR_CLUSTER_DIR.
# Environment:
#   GREGOR_CLUSTER_DIR        default ./cluster-data
#   GREGOR_CLUSTER_PORT       first Kafka port, default 9092
#   GREGOR_CLUSTER_PEER_PORT  first peer port, default 9192
#   GREGOR_BIN                use this gregor binary instead of building one
#   GREGOR_CLUSTER_CONFIG     a config file (TOML, Kafka key names) given to every node,
#                             e.g. with "default.replication.factor" = 3
#   CARGO_TARGET_DIR          honoured by the build (default: target/ in the repo)
#   RUST_LOG                  passed to the nodes (default info)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${GREGOR_CLUSTER_DIR:-./cluster-data}"
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=15
STATE="$DIR/cluster.conf"

die() {
    echo "ci/cluster.sh: $*" >&2
    exit 1
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

# The settings of the cluster that `start` wrote: N, PORT, PEER_PORT, BIN, CONFIG.
load_state() {
    [[ -f "$STATE" ]] || die "no cluster in $DIR (start one with: ci/cluster.sh start)"
    N="" PORT="" PEER_PORT="" BIN="" CONFIG=""
    # shellcheck source=/dev/null
    source "$STATE"
    if ! { is_number "$N" && is_number "$PORT" && is_number "$PEER_PORT" && [[ -n "$BIN" ]]; }; then
        die "$STATE is damaged; remove $DIR to start afresh"
    fi
}

kafka_port() { echo $((PORT + $1 - 1)); }
peer_port() { echo $((PEER_PORT + $1 - 1)); }
pid_file() { echo "$DIR/n$1.pid"; }
log_file() { echo "$DIR/n$1.log"; }

peers_flag() {
    local id list=""
    for ((id = 1; id <= N; id++)); do
        list+="${list:+,}$id@127.0.0.1:$(peer_port "$id")"
    done
    echo "$list"
}

bootstrap() {
    local id list=""
    for ((id = 1; id <= N; id++)); do
        list+="${list:+,}127.0.0.1:$(kafka_port "$id")"
    done
    echo "$list"
}

# The pid of node $1 if it is running: the pid in its pid file is a live (not zombie)
# process named gregor, so a recycled pid is never signalled.
running_pid() {
    local file pid stat
    file="$(pid_file "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    is_number "$pid" || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    [[ "$stat" == "$pid (gregor) "* && "$stat" != "$pid (gregor) Z"* ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts node $1 in the background; its output is appended to its log.
launch() {
    local id=$1 log config=()
    log="$(log_file "$id")"
    [[ -z "$CONFIG" ]] || config=(--config "$CONFIG")
    echo "=== $(date -u +%FT%TZ) ci/cluster.sh starts node $id" >>"$log"
    RUST_LOG="${RUST_LOG:-info}" "$BIN" "${config[@]+"${config[@]}"}" \
        --node-id "$id" \
        --listen "127.0.0.1:$(kafka_port "$id")" \
        --peer-listen "127.0.0.1:$(peer_port "$id")" \
        --peers "$(peers_flag)" \
        --data-dir "$DIR/n$id" \
        </dev/null >>"$log" 2>&1 &
    local pid=$! deadline=$((SECONDS + 5))
    echo "$pid" >"$(pid_file "$id")"
    # Until the background shell has exec'd gregor, the pid is not yet named gregor.
    while [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != gregor ]] && kill -0 "$pid" 2>/dev/null &&
        [[ $SECONDS -lt $deadline ]]; do
        sleep 0.01
    done
}

# Waits until each node given is ready (its log shows the listening line after the start
# marker, and its Kafka port accepts connections); on timeout or exit shows its log's tail.
wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_S)) id log pending=("$@")
    while [[ ${#pending[@]} -gt 0 ]]; do
        id=${pending[0]}
        log="$(log_file "$id")"
        if ! running_pid "$id" >/dev/null; then
            echo "ci/cluster.sh: node $id exited; last lines of $log:" >&2
            tail -n 30 "$log" >&2
            echo "ci/cluster.sh: stop the other nodes with: ci/cluster.sh stop" >&2
            exit 1
        fi
        # The listening line must come after the last start marker.
        if awk '/ci\/cluster.sh starts node/ { ready = 0 } /gregor listening on/ { ready = 1 }
                END { exit !ready }' "$log" && port_open "$(kafka_port "$id")"; then
            pending=("${pending[@]:1}")
            continue
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            echo "ci/cluster.sh: node $id not ready within ${READY_TIMEOUT_S}s; last lines of $log:" >&2
            tail -n 30 "$log" >&2
            echo "ci/cluster.sh: stop the nodes with: ci/cluster.sh stop" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# SIGTERMs the nodes given, waits up to STOP_TIMEOUT_S, then SIGKILLs what is left.
stop_nodes() {
    local id pid deadline=$((SECONDS + STOP_TIMEOUT_S)) left=()
    for id in "$@"; do
        if pid="$(running_pid "$id")"; then
            kill -TERM "$pid" 2>/dev/null || true
            left+=("$id")
        else
            rm -f "$(pid_file "$id")"
        fi
    done
    while [[ ${#left[@]} -gt 0 ]]; do
        local still=()
        for id in "${left[@]}"; do
            if running_pid "$id" >/dev/null; then
                still+=("$id")
            else
                echo "node $id stopped"
                rm -f "$(pid_file "$id")"
            fi
        done
        left=("${still[@]+"${still[@]}"}")
        [[ ${#left[@]} -gt 0 ]] || break
        if [[ $SECONDS -ge $deadline ]]; then
            for id in "${left[@]}"; do
                if pid="$(running_pid "$id")"; then
                    echo "node $id did not stop within ${STOP_TIMEOUT_S}s: SIGKILL"
                    kill -KILL "$pid" 2>/dev/null || true
                    wait_gone "$id"
                fi
                rm -f "$(pid_file "$id")"
            done
            break
        fi
        sleep 0.1
    done
}

# Waits (up to 5 s) until node $1's process is gone after a SIGKILL.
wait_gone() {
    local deadline=$((SECONDS + 5))
    while running_pid "$1" >/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.05; done
}

check_id() {
    if ! { is_number "${1:-}" && [[ $1 -ge 1 && $1 -le $N ]]; }; then
        die "node id must be 1..$N, not '${1:-}'"
    fi
}

cmd_start() {
    local n=${1:-3} id p
    if ! { is_number "$n" && [[ $n -ge 1 && $n -le 9 ]]; }; then
        die "N must be 1..9 (3 or 5 make sense), not '$n'"
    fi
    if [[ -f "$STATE" ]]; then
        load_state
        for ((id = 1; id <= N; id++)); do
            if running_pid "$id" >/dev/null; then
                die "a cluster is already running in $DIR (node $id); stop it first: ci/cluster.sh stop"
            fi
        done
        # The voters are part of the data: a cluster of another size needs fresh directories.
        if [[ $N -ne $n && -d "$DIR/n1" ]]; then
            die "the data in $DIR is a $N-node cluster's; remove $DIR to start $n nodes"
        fi
    fi
    N=$n
    PORT="${GREGOR_CLUSTER_PORT:-9092}"
    PEER_PORT="${GREGOR_CLUSTER_PEER_PORT:-9192}"
    if ! { is_number "$PORT" && is_number "$PEER_PORT"; }; then
        die "GREGOR_CLUSTER_PORT and GREGOR_CLUSTER_PEER_PORT must be numbers"
    fi
    if [[ $PEER_PORT -lt $((PORT + N)) && $PORT -lt $((PEER_PORT + N)) ]]; then
        die "Kafka ports $PORT.. and peer ports $PEER_PORT.. overlap"
    fi
    for ((id = 1; id <= N; id++)); do
        for p in "$(kafka_port "$id")" "$(peer_port "$id")"; do
            if port_open "$p"; then die "port $p on 127.0.0.1 is in use"; fi
        done
    done
    if [[ -n "${GREGOR_BIN:-}" ]]; then
        BIN="$GREGOR_BIN"
    else
        (cd "$ROOT" && cargo build --release --bin gregor)
        BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/gregor"
    fi
    [[ -x "$BIN" ]] || die "no gregor binary at $BIN"
    BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
    CONFIG="${GREGOR_CLUSTER_CONFIG:-}"
    if [[ -n "$CONFIG" ]]; then
        [[ -f "$CONFIG" ]] || die "GREGOR_CLUSTER_CONFIG: no file $CONFIG"
        CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
    fi
    mkdir -p "$DIR"
    printf 'N=%q\nPORT=%q\nPEER_PORT=%q\nBIN=%q\nCONFIG=%q\n' "$N" "$PORT" "$PEER_PORT" "$BIN" "$CONFIG" >"$STATE"
    local ids=()
    for ((id = 1; id <= N; id++)); do
        launch "$id"
        ids+=("$id")
    done
    wait_ready "${ids[@]}"
    echo "$N nodes up; data and logs in $DIR"
    echo "bootstrap servers: $(bootstrap)"
}

cmd_status() {
    load_state
    local id pid state
    for ((id = 1; id <= N; id++)); do
        if pid="$(running_pid "$id")"; then
            state="up   pid $pid"
            port_open "$(kafka_port "$id")" || state="up   pid $pid (Kafka port not accepting)"
        else
            state="down"
        fi
        printf 'node %d  %-36s kafka 127.0.0.1:%d  peer 127.0.0.1:%d  data %s\n' \
            "$id" "$state" "$(kafka_port "$id")" "$(peer_port "$id")" "$DIR/n$id"
    done
    echo "bootstrap servers: $(bootstrap)"
}

cmd_kill() {
    load_state
    check_id "${1:-}"
    local pid
    pid="$(running_pid "$1")" || die "node $1 is not running"
    kill -KILL "$pid"
    wait_gone "$1"
    rm -f "$(pid_file "$1")"
    echo "node $1 (pid $pid) killed"
}

cmd_restart() {
    load_state
    check_id "${1:-}"
    stop_nodes "$1"
    launch "$1"
    wait_ready "$1"
    echo "node $1 up (pid $(cat "$(pid_file "$1")"))"
}

cmd_stop() {
    load_state
    local ids=() id
    for ((id = 1; id <= N; id++)); do ids+=("$id"); done
    stop_nodes "${ids[@]}"
}

case "${1:-}" in
    start) cmd_start "${2:-3}" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "ci/cluster.sh: unknown command '$1' (see --help)" >&2; exit 2 ;;
esac
