#!/usr/bin/env bash
# Counts the system calls a server makes per delivery in one small fanout (strace -c -f):
# on loopback most of a fan-out server's CPU is spent in the kernel, which callgrind does
# not see, so the number of writes per delivery is the figure to watch.
#
#   bench/scripts/syscalls.sh chat|go|redis ["fanout args"]
# Output: target/bench-results/strace-<target>-<time>.txt
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
target=${1:-chat}
args=${2:-"fanout -c 100 -k 10 -m 200 -w 32"}
target_dir="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target_dir/bench-results"
out="$target_dir/bench-results/strace-$target-$(date +%Y%m%d-%H%M%S).txt"
command -v strace >/dev/null || { echo "strace missing: apt-get install -y strace" >&2; exit 1; }
cargo build --release -q -p chat-server -p chat-bench
port=$((10000 + RANDOM % 20000))
case "$target" in
    chat) cmd=("$target_dir/release/chat-server" --listen "127.0.0.1:$port" --rate 0 --max-per-ip 0) ;;
    go) cmd=(env "CHAT_LISTEN=127.0.0.1:$port" "$(bench/scripts/build-go-server.sh)") ;;
    redis) cmd=(redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no) ;;
    *) echo "target: chat, go or redis" >&2; exit 2 ;;
esac
strace -f -c -o "$out" "${cmd[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086
timeout 120 "$target_dir/release/chat-bench" --target "$target" --addr "127.0.0.1:$port" \
    --timeout 90s $args 2>&1 | grep deliveries || true
# $pid is strace; stopping the server it started makes strace print the summary and exit.
server=$(cat "/proc/$pid/task/$pid/children")
[[ $target == go ]] && server=$(cat "/proc/$server/task/$server/children" 2>/dev/null || echo "$server")
for child in $server; do kill -TERM "$child" 2>/dev/null || true; done
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -9 $server 2>/dev/null || true
wait "$pid" || true
head -20 "$out"
echo "in $out" >&2
