#!/usr/bin/env bash
# Server CPU per delivery with metrics off and on (--metrics-listen), in alternating runs of
# the same fanout, so that the machine's drift hits both alike. Prints the median of each
# and their ratio; with CALLGRIND=1, also user-space instructions per delivery of each
# (repeatable whatever else the machine does). Method: docs/BENCHMARKS.md.
#
#   bench/scripts/metrics-on-off.sh                    # REPS=7, fanout -c 100 -k 10 -m 2000 -w 32
#   REPS=3 FANOUT="-c 100 -k 10 -m 500 -w 1" bench/scripts/metrics-on-off.sh
#   CALLGRIND=1 bench/scripts/metrics-on-off.sh
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="${OUT:-$target_dir/bench-results/metrics-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
reps=${REPS:-7}
fanout=${FANOUT:-"-c 100 -k 10 -m 2000 -w 32"}
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p chat-server -p chat-bench
bench="$target_dir/release/chat-bench"
server="$target_dir/release/chat-server"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# run MODE NAME [WRAPPER...]: one server, one fanout; the report goes to $out/NAME.json.
run() {
    local mode=$1 name=$2
    shift 2
    # Two free ports in a row (the plain one and, for metrics, the next).
    local port
    while :; do
        port=$((20000 + RANDOM % 20000))
        port_open "$port" || port_open "$((port + 1))" || break
    done
    local metrics=()
    if [ "$mode" = on ]; then
        metrics=(--metrics-listen "127.0.0.1:$((port + 1))")
    fi
    "$@" "$server" --listen "127.0.0.1:$port" --rate 0 --max-per-ip 0 --idle-timeout 10m \
        --history-db "$out/$name.sqlite3" "${metrics[@]}" 2>"$out/$name.server.log" &
    local pid=$!
    for _ in $(seq 300); do port_open "$port" && break; sleep 0.1; done
    # shellcheck disable=SC2086
    timeout 300 "$bench" --target chat --addr "127.0.0.1:$port" --server-pid "$pid" \
        --timeout 240s --json fanout $fanout >"$out/$name.json" 2>"$out/$name.txt" || true
    if [ "$mode" = on ]; then
        # Proof that the run was counted: the deliveries the server saw.
        if exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))"; then
            printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
            grep '^chat_deliveries_total' <&3 >"$out/$name.metrics" || true
            exec 3<&-
        fi
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
}

field() { sed -n "s/.*\"$2\":\\([0-9.e+-]*\\).*/\\1/p" "$1"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

if [ "$reps" -gt 0 ]; then
    for rep in $(seq "$reps"); do
        # Alternate which goes first, so neither always runs on a warmer machine.
        if [ $((rep % 2)) = 1 ]; then order="off on"; else order="on off"; fi
        for mode in $order; do
            run "$mode" "$mode-$rep"
            echo "$mode $rep: $(field "$out/$mode-$rep.json" cpu_us_per_delivery_schedstat) µs/delivery" \
                "($(field "$out/$mode-$rep.json" deliveries) deliveries)" \
                "$(cat "$out/$mode-$rep.metrics" 2>/dev/null || true)" | tee -a "$out/runs.txt"
        done
    done
    off=$(for r in $(seq "$reps"); do field "$out/off-$r.json" cpu_us_per_delivery_schedstat; done | median)
    on=$(for r in $(seq "$reps"); do field "$out/on-$r.json" cpu_us_per_delivery_schedstat; done | median)
    echo "median CPU per delivery: off $off µs, on $on µs, on/off $(awk "BEGIN { printf \"%.3f\", $on / $off }")" |
        tee -a "$out/summary.txt"
fi

if [ "${CALLGRIND:-0}" = 1 ]; then
    command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
    # All instructions, less quanta's clock calibration: the metrics exporter's clock
    # calibrates itself once, for a set time, so its count varies from run to run and is not
    # a cost per delivery.
    total_ir() {
        callgrind_annotate "$1" 2>/dev/null | awk '
            /PROGRAM TOTALS/ && !total { gsub(",", "", $1); total = $1 }
            /=>/ { next }
            /quanta-.*OnceCell.*initialize|clock_gettime/ { gsub(",", "", $1); calibration += $1 }
            END { print total - calibration }'
    }
    # Per mode: the same clients and joins without messages, then the fanout; the difference
    # is what the messages cost, without start-up (metrics calibrate a clock once) or joins.
    declare -A per
    for mode in off on; do
        fanout="-c 100 -k 10 -m 1 -w 1"
        run "$mode" "callgrind-$mode-base" valgrind --tool=callgrind \
            --callgrind-out-file="$out/callgrind.out.$mode-base"
        fanout=${CALLGRIND_FANOUT:-"-c 100 -k 10 -m 200 -w 32"}
        run "$mode" "callgrind-$mode" valgrind --tool=callgrind \
            --callgrind-out-file="$out/callgrind.out.$mode"
        base_ir=$(total_ir "$out/callgrind.out.$mode-base")
        base_n=$(field "$out/callgrind-$mode-base.json" deliveries)
        ir=$(total_ir "$out/callgrind.out.$mode")
        n=$(field "$out/callgrind-$mode.json" deliveries)
        per[$mode]=$(( (ir - base_ir) / (n - base_n) ))
        echo "callgrind $mode: $ir instructions, $n deliveries; without messages $base_ir," \
            "$base_n deliveries: ${per[$mode]} instructions per delivery" | tee -a "$out/summary.txt"
    done
    echo "callgrind: on/off $(awk "BEGIN { printf \"%.3f\", ${per[on]} / ${per[off]} }")" |
        tee -a "$out/summary.txt"
fi
echo "results in $out" >&2
