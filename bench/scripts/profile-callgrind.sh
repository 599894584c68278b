#!/usr/bin/env bash
# Instruction counts of chat-server under one fanout, with callgrind: stable on a noisy
# shared machine, unlike wall-clock profiles. Prints instructions per delivery and the
# top functions (inclusive and exclusive).
#
#   bench/scripts/profile-callgrind.sh                 # W=32 and W=1, small fanout
#   FANOUT="-c 100 -k 10 -m 200 -w 1" bench/scripts/profile-callgrind.sh
#
# Output: target/bench-results/callgrind-<time>/ (callgrind.out.* and the annotations).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$target_dir/bench-results/callgrind-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }

cargo build --release -q -p chat-server -p chat-bench
bench="$target_dir/release/chat-bench"
server="$target_dir/release/chat-server"

profile() {
    local name=$1
    shift
    local port=$((10000 + RANDOM % 20000))
    # --threads 1: one worker, so the count is not split over threads (callgrind runs
    # threads one at a time anyway). Toggle collection off during connect and settle is
    # not possible from outside, so a run with no senders is subtracted below.
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.$name" \
        "$server" --listen "127.0.0.1:$port" --rate 0 --max-per-ip 0 --idle-timeout 10m \
        --threads 1 2>"$out/$name.server.log" &
    local pid=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    timeout 300 "$bench" --addr "127.0.0.1:$port" --server-pid "$pid" --timeout 240s --json \
        "$@" >"$out/$name.json" 2>"$out/$name.txt" || true
    kill -TERM "$pid"
    wait "$pid" || true
    # (|| true: head closing the pipe early is not a failure)
    callgrind_annotate --inclusive=yes "$out/callgrind.out.$name" 2>/dev/null |
        head -60 >"$out/$name.inclusive.txt" || true
    callgrind_annotate "$out/callgrind.out.$name" 2>/dev/null |
        head -50 >"$out/$name.exclusive.txt" || true
}

total_ir() {
    callgrind_annotate "$1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}

deliveries() {
    sed -n 's/.*"deliveries":\([0-9]*\).*/\1/p' "$1"
}

# Same clients and joins without any message: its instructions are the fixed cost.
profile baseline fanout -c 100 -k 10 -m 1 -w 1
base_ir=$(total_ir "$out/callgrind.out.baseline")
base_deliveries=$(deliveries "$out/baseline.json")
for spec in "w32:-w 32" "w1:-w 1"; do
    name=${spec%%:*}
    window=${spec#*:}
    # shellcheck disable=SC2086
    profile "$name" fanout -c 100 -k 10 -m "${MESSAGES:-200}" $window
    ir=$(total_ir "$out/callgrind.out.$name")
    n=$(deliveries "$out/$name.json")
    echo "$name: $ir instructions total, $n deliveries;" \
        "$(( (ir - base_ir) / (n - base_deliveries) )) instructions per delivery" \
        "(after subtracting the no-message baseline of $base_ir)" | tee -a "$out/summary.txt"
done
echo "annotations in $out" >&2
