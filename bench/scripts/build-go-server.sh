#!/usr/bin/env bash
# Builds the original Go chat server from the tutorial text in ../shared/seed.
#
# The tutorial embeds the program between "package main" and the closing brace of main();
# we cut exactly that out and change one thing: the listen address, hardcoded ":8000",
# comes from $CHAT_LISTEN (default ":8000") so benchmarks can pick a free 127.0.0.1 port.
# Everything else (the unsynchronised map, 2048-byte reads without line framing, the
# unbuffered channels, the 30 s idle timeout) is the original, bugs included.
#
# Output: target/go-chat/chat-go (prints its path). Needs `go` (Debian: golang-go).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
seed_dir="${CHAT_SEED_DIR:-$root/../shared/seed}"
out_dir="${CARGO_TARGET_DIR:-$root/target}/go-chat"
mkdir -p "$out_dir"

if ! command -v go >/dev/null; then
    echo "go not found: apt-get install -y golang-go" >&2
    exit 1
fi

seed=$(grep -l '^package main' "$seed_dir"/*.txt | head -n 1)
if [[ -z "$seed" ]]; then
    echo "no Go program found in $seed_dir" >&2
    exit 1
fi

# From "package main" to the brace that closes func main() (the tutorial text has no
# indentation, so count braces rather than look for a lone "}").
awk '
    /^package main/ { on = 1 }
    on { print }
    on && /^func main\(\)/ { in_main = 1 }
    in_main {
        depth += gsub(/\{/, "{") - gsub(/\}/, "}")
        if (depth == 0) exit
    }
' "$seed" >"$out_dir/original.go.txt"

sed -e 's|net.Listen("tcp", ":8000")|net.Listen("tcp", listenAddr())|' \
    -e 's|^import (|import (\n"os"|' \
    "$out_dir/original.go.txt" >"$out_dir/main.go"
cat >>"$out_dir/main.go" <<'GO'

// Added for benchmarking: the original hardcodes ":8000".
func listenAddr() string {
	if addr := os.Getenv("CHAT_LISTEN"); addr != "" {
		return addr
	}
	return ":8000"
}
GO
grep -q 'listenAddr()' "$out_dir/main.go" || { echo "could not patch the listen address" >&2; exit 1; }

cd "$out_dir"
[[ -f go.mod ]] || go mod init chatgo >/dev/null 2>&1
gofmt -l . >/dev/null
GOFLAGS=-mod=mod GO111MODULE=on go build -o chat-go . >&2
echo "$out_dir/chat-go"
