#!/usr/bin/env bash
# Runs the table of issue 4 against chat-server, the original Go server and redis pub/sub,
# REPS times each (default 3), and writes the results as JSON lines plus a markdown table.
#
#   bench/run-all.sh                         # everything, 3 repeats
#   REPS=1 ROWS="fanout-w32 latency" bench/run-all.sh
#   TARGETS="chat chat-mem chat-1t chat-json go redis" bench/run-all.sh
#     (chat: chat-server with its room log on disk, a fresh file per run in the output
#     directory, deleted after the run; chat-mem: --history-db :memory:; chat-1t:
#     --threads 1; chat-json: the JSON protocol)
#   TARGETS="chat chat-cluster" ROWS="fanout-w32 fanout-w1 latency" bench/run-all.sh
#     (chat-cluster: three chat-server nodes with --cluster on one fresh redis-server, no
#     persistence; clients spread round-robin over the nodes, CPU and RSS summed over the
#     nodes and Redis)
#   CHAT_SERVER_ARGS="--history-sync full" bench/run-all.sh
#   CHAT_BASE_SERVER=/path/to/old/chat-server TARGETS="chat chat-base redis" bench/run-all.sh
#     (chat-base: another build of chat-server, e.g. one from before the room log, run with
#     the same flags but no --history-db; the caller builds it, see docs/BENCHMARKS.md)
#   CHAT_BASE_SERVER=/path/to/old/chat-server TARGETS="chat chat-base-log redis" ...
#     (chat-base-log: that other build with its room log on disk like chat, a fresh file
#     per run: before/after comparisons of a change to the log)
#   CHAT_BASE_SERVER=/path/to/old/chat-server TARGETS="chat-cluster-base chat-cluster" ...
#     (chat-cluster-base: the chat-cluster setup with that other build as the three nodes,
#     for before/after comparisons of cluster mode within one session)
#
# The rows resume, resume-gated, resume-after-leaves, idle-ping and idle-who run against
# chat-server only (redis and the Go original have no history and no JSON mode); other
# targets get "n/a" in the table. The idle rows run the server with its default
# --idle-timeout 30s, so the clients' keepalive period is the real one.
#
# Every run gets a fresh server on a free 127.0.0.1 port (RSS figures start clean, and the
# Go original may crash on disconnects), is bounded by chat-bench --timeout and by an
# outer `timeout`, and the server is killed afterwards. Output: target/bench-results/<time>/
# with results.jsonl, table.md, machine.md and each server's log.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
REPS="${REPS:-3}"
TARGETS="${TARGETS:-chat go redis}"
ROWS="${ROWS:-fanout-w32 fanout-w1 fanout-c1000 latency connections slow-consumer churn resume resume-gated resume-after-leaves idle-ping idle-who}"
CHAT_SERVER_ARGS="${CHAT_SERVER_ARGS:-}"
CHAT_BASE_SERVER="${CHAT_BASE_SERVER:-}"
out="${OUT:-$target_dir/bench-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

need() {
    command -v "$1" >/dev/null && return
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $2" >&2
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    else
        echo "$1 missing: apt-get install -y $2" >&2
        exit 1
    fi
}
[[ " $TARGETS " == *" go "* ]] && need go golang-go
[[ " $TARGETS " == *" redis "* || " $TARGETS " == *" chat-cluster"* ]] &&
    need redis-server redis-server

echo "building (release)" >&2
cargo build --release -q -p chat-server -p chat-bench
bench="$target_dir/release/chat-bench"
chat_server="$target_dir/release/chat-server"
go_server=""
[[ " $TARGETS " == *" go "* ]] && go_server=$(bench/scripts/build-go-server.sh)
if [[ " $TARGETS " == *" chat-base "* || " $TARGETS " == *" chat-base-log "* ||
    " $TARGETS " == *" chat-cluster-base "* ]] && [[ ! -x "$CHAT_BASE_SERVER" ]]; then
    echo "chat-base, chat-base-log and chat-cluster-base need CHAT_BASE_SERVER=/path/to/chat-server" >&2
    exit 1
fi

# 5,000 connections need more than the usual 1,024 descriptors, in the servers too.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

{
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores online"
    echo "- memory: $(free -h | awk '/^Mem:/ {print $2}'), kernel $(uname -r)"
    echo "- $(rustc --version)"
    [[ -n "$go_server" ]] && echo "- $(go version)"
    [[ " $TARGETS " == *" chat-base"* || " $TARGETS " == *" chat-cluster-base "* ]] &&
        echo "- chat-base: $CHAT_BASE_SERVER ($("$CHAT_BASE_SERVER" --version))"
    command -v redis-server >/dev/null && echo "- $(redis-server --version | cut -d' ' -f1-3)"
    echo "- fd limit $(ulimit -n); chat-server args: --rate 0 --max-per-ip 0 --idle-timeout 10m (30s for idle-*) --history-db $out/history-RUN.sqlite3 (chat-mem: :memory:) $CHAT_SERVER_ARGS"
    [[ " $TARGETS " == *" chat-cluster"* ]] && echo "- chat-cluster: redis-server --save \"\" --appendonly no on a fresh port and directory; three nodes --cluster redis://127.0.0.1:PORT --node-id n1..n3 --rate 0 --max-per-ip 0 --idle-timeout 10m $CHAT_SERVER_ARGS; clients round-robin over the nodes; CPU and RSS summed over the nodes and Redis"
    echo "- run at $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- server protocol bench || echo ' (with uncommitted changes)')"
    echo "- load at start: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
} >"$out/machine.md"

# Below the ephemeral range: the bench's own outgoing connections use those ports.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local port
    for _ in $(seq 50); do
        port=$((10000 + RANDOM % (ephemeral_low - 10000)))
        if ! grep -q ":$(printf '%04X' "$port") " /proc/net/tcp; then
            echo "$port"
            return
        fi
    done
    echo "no free port" >&2
    return 1
}

# Waits until something listens on 127.0.0.1:$1, looking at /proc/net/tcp rather than
# connecting: a probe connection would join and leave the Go original, whose unsynchronised
# map can crash on that leave while the first real client joins.
wait_for_port() {
    local hex
    hex=$(printf '%04X' "$1")
    for _ in $(seq 100); do
        grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp && return 0
        sleep 0.05
    done
    echo "server did not open port $1" >&2
    return 1
}

# The processes of the current run, in start order (chat-cluster: Redis, then three nodes),
# their addresses for chat-bench, and their logs.
server_pids=()
server_addrs=()
server_logs=()
redis_dir=""
stop_one() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    # Last started first: a cluster's nodes stop before their Redis.
    local i
    for ((i = ${#server_pids[@]} - 1; i >= 0; i--)); do
        stop_one "${server_pids[$i]}"
    done
    server_pids=()
    server_addrs=()
    if [[ -n "$redis_dir" ]]; then
        rm -rf "$redis_dir"
        redis_dir=""
    fi
}
trap 'stop_server; remove_history_db' EXIT

# Our server with its room log (chat-base may predate it).
has_log() {
    [[ "$1" == chat || "$1" == chat-json || "$1" == chat-1t || "$1" == chat-mem ||
        "$1" == chat-base-log || "$1" == chat-cluster || "$1" == chat-cluster-base ]]
}

chat_only() {
    case "$1" in
        resume | resume-gated | resume-after-leaves | idle-ping | idle-who) return 0 ;;
        *) return 1 ;;
    esac
}

# The room log of the current run (on-disk targets): a fresh file, deleted after the run.
history_db=""
remove_history_db() {
    if [[ -n "$history_db" ]]; then
        rm -f "$history_db" "$history_db-wal" "$history_db-shm" "$history_db-journal" "$history_db-ahead"
        history_db=""
    fi
}

# start_cluster LOG IDLE SERVER: one redis-server in a fresh directory, without
# persistence, and three nodes of the chat-server binary SERVER using it; each process logs
# to LOG.NAME.
start_cluster() {
    local log_base=${1%.log} redis_port node port
    redis_port=$(free_port)
    redis_dir=$(mktemp -d "$out/redis.XXXXXX")
    server_logs+=("$log_base.redis.log")
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir" --save "" \
        --appendonly no --maxclients 20000 --daemonize no >"$log_base.redis.log" 2>&1 &
    server_pids+=($!)
    wait_for_port "$redis_port"
    for node in n1 n2 n3; do
        port=$(free_port)
        server_logs+=("$log_base.$node.log")
        # shellcheck disable=SC2086
        "$3" --listen "127.0.0.1:$port" --cluster "redis://127.0.0.1:$redis_port" \
            --node-id "$node" --rate 0 --max-per-ip 0 --idle-timeout "$2" \
            $CHAT_SERVER_ARGS 2>"$log_base.$node.log" &
        server_pids+=($!)
        server_addrs+=("127.0.0.1:$port")
        wait_for_port "$port"
    done
}

# start_server TARGET LOG ROW RUN: sets server_pids, server_addrs and server_logs.
start_server() {
    server_logs=("$2")
    local idle=10m
    [[ "$3" == idle-* ]] && idle=30s
    if [[ "$1" == chat-cluster || "$1" == chat-cluster-base ]]; then
        history_db=""
        local server=$chat_server
        [[ "$1" == chat-cluster-base ]] && server=$CHAT_BASE_SERVER
        start_cluster "$2" "$idle" "$server"
        return
    fi
    port=$(free_port)
    # A fresh log per run: a leftover from an interrupted session would start at its seq.
    history_db="$out/history-$4.sqlite3"
    rm -f "$history_db" "$history_db-wal" "$history_db-shm" "$history_db-journal" "$history_db-ahead"
    local chat_args=(--listen "127.0.0.1:$port" --rate 0 --max-per-ip 0 --idle-timeout "$idle")
    case "$1" in
        chat | chat-json)
            # shellcheck disable=SC2086
            "$chat_server" "${chat_args[@]}" --history-db "$history_db" $CHAT_SERVER_ARGS 2>"$2" &
            ;;
        chat-1t)
            # shellcheck disable=SC2086
            "$chat_server" "${chat_args[@]}" --history-db "$history_db" --threads 1 \
                $CHAT_SERVER_ARGS 2>"$2" &
            ;;
        chat-mem)
            history_db=""
            # shellcheck disable=SC2086
            "$chat_server" "${chat_args[@]}" --history-db :memory: $CHAT_SERVER_ARGS 2>"$2" &
            ;;
        chat-base-log)
            # shellcheck disable=SC2086
            "$CHAT_BASE_SERVER" "${chat_args[@]}" --history-db "$history_db" $CHAT_SERVER_ARGS 2>"$2" &
            ;;
        chat-base)
            history_db=""
            # shellcheck disable=SC2086
            "$CHAT_BASE_SERVER" "${chat_args[@]}" $CHAT_SERVER_ARGS 2>"$2" &
            ;;
        go)
            history_db=""
            CHAT_LISTEN="127.0.0.1:$port" "$go_server" >"$2" 2>&1 &
            ;;
        redis)
            history_db=""
            redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
                --maxclients 20000 --daemonize no >"$2" 2>&1 &
            ;;
    esac
    server_pids=($!)
    server_addrs=("127.0.0.1:$port")
    wait_for_port "$port"
}

args_of() {
    case "$1" in
        fanout-w32) echo "--timeout 30s fanout -c 100 -k 10 -m 2000 -w 32" ;;
        fanout-w1) echo "--timeout 40s fanout -c 100 -k 10 -m 2000 -w 1" ;;
        fanout-c1000) echo "--timeout 40s fanout -c 1000 -k 5 -m 200 -w 32" ;;
        latency) echo "--timeout 30s latency -c 100 --rate 1000 --duration 3s" ;;
        connections) echo "--timeout 45s connections -n 5000" ;;
        slow-consumer) echo "--timeout 20s slow-consumer -c 10 -k 5 -m 40000 -w 32" ;;
        churn) echo "--timeout 20s churn -c 10 -p 4 --duration 2s" ;;
        resume) echo "--timeout 60s resume -c 1000 --gap 100" ;;
        resume-gated) echo "--timeout 60s resume -c 1000 --gap 100 --reconnect-concurrency 64" ;;
        resume-after-leaves) echo "--timeout 60s resume -c 1000 --gap 100 --from after-leaves" ;;
        idle-ping) echo "--timeout 100s idle-room -c 2000 --keepalive ping --duration 30s" ;;
        idle-who) echo "--timeout 100s idle-room -c 2000 --keepalive who --duration 30s" ;;
        *) echo "unknown row $1" >&2; return 1 ;;
    esac
}

# chat-bench's --timeout plus room for teardown.
outer_timeout_of() {
    case "$1" in
        idle-*) echo 130 ;;
        *) echo 90 ;;
    esac
}

results="$out/results.jsonl"
: >"$results"
for row in $ROWS; do
    for rep in $(seq "$REPS"); do
        # Targets interleaved within a repeat, so a noisy minute hits all of them.
        for target in $TARGETS; do
            if chat_only "$row" && ! has_log "$target"; then
                echo "$row rep $rep $target: skipped ($target has no room log or no JSON keepalive)" >&2
                continue
            fi
            log="$out/$row.$target.$rep.log"
            # Other work on the machine skews a run: keep the load it started under.
            load1=$(cut -d' ' -f1 /proc/loadavg)
            start_server "$target" "$log" "$row" "$row.$target.$rep"
            case "$target" in
                chat-json) bench_target=(--target chat --json-mode) ;;
                chat-1t | chat-mem | chat-base | chat-base-log | chat-cluster | chat-cluster-base) bench_target=(--target chat) ;;
                *) bench_target=(--target "$target") ;;
            esac
            # shellcheck disable=SC2046
            report=$(timeout "$(outer_timeout_of "$row")" "$bench" "${bench_target[@]}" \
                --addr "$(IFS=,; echo "${server_addrs[*]}")" \
                --server-pid "$(IFS=,; echo "${server_pids[*]}")" \
                --json $(args_of "$row") 2>>"$log") || true
            if [[ -z "$report" ]]; then
                report='{"error":"chat-bench printed no report (killed by the outer timeout?)"}'
            fi
            # A crashed child is a zombie until reaped: kill -0 would still succeed.
            alive=true
            for pid in "${server_pids[@]}"; do
                state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
                [[ -z "$state" || "$state" == Z || "$state" == X ]] && alive=false
            done
            printf '{"row":"%s","rep":%d,"target":"%s","load1":%s,"server_alive":%s,"report":%s}\n' \
                "$row" "$rep" "$target" "$load1" "$alive" "$report" >>"$results"
            summary=$(sed -n 's/.*"error":\("[^"]*"\).*/error \1/p' <<<"$report")
            stop_server
            if [[ -n "$history_db" && -f "$history_db" ]]; then
                echo "run-all: room log $(du -k "$history_db"* | awk '{s += $1} END {print s}') KiB on disk" >>"$log"
            fi
            remove_history_db
            # tracing's levels, from the server's own lines (chat-bench writes none of these).
            problems=$(cat "${server_logs[@]}" | grep -c -E '^[0-9TZ:.-]+ +(WARN|ERROR) ' || true)
            [[ "$problems" != 0 ]] && summary="${summary:-ok}; server log: $problems WARN/ERROR lines"
            echo "$row rep $rep $target: ${summary:-ok} (load $load1)" >&2
        done
    done
done

echo "- load at end: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)" >>"$out/machine.md"
# shellcheck disable=SC2086
"$bench" summarize "$results" --targets "$(tr ' ' ',' <<<"$TARGETS")" >"$out/table.md"
cat "$out/machine.md" "$out/table.md"
echo "results in $out" >&2
