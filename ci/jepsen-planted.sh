#!/usr/bin/env bash
# Shows that gregor-jepsen finds a real bug: the same short run against a gregor with the
# planted bug `commit-on-minority` (a leader answers acks=all once its own copy is on disk)
# must report lost writes, and against the same binary without the bug must be valid.
# Run by hand (needs root for network namespaces and nftables); about 4 minutes.
#
# Usage: ci/jepsen-planted.sh [seed]   (default seed 1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SEED="${1:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PLANTED_TARGET="$TARGET_DIR/planted"
OUT="$ROOT/ci/.logs/jepsen-planted"
rm -rf "$OUT"
mkdir -p "$OUT"

# A separate target dir: the feature changes the engine's build.
CARGO_TARGET_DIR="$PLANTED_TARGET" cargo build --release -p gregor-node --bin gregor --features planted-bugs
cargo build -p gregor-jepsen --bin gregor-jepsen
JEPSEN="$TARGET_DIR/debug/gregor-jepsen"
GREGOR="$PLANTED_TARGET/release/gregor"

run() { # name, extra args...
    local name="$1"
    shift
    set +e
    "$JEPSEN" --nodes 3 --time-limit 60 --seed "$SEED" --nemesis isolate-leader,partition-isolate \
        --nemesis-interval 10 --final-wait 5 --final-time-limit 60 --sub-via assign \
        --prefix gjpl --subnet 10.76.0 --gregor "$GREGOR" --results "$OUT/$name" "$@" 2>&1 | tail -n 4
    local rc=${PIPESTATUS[0]}
    set -e
    echo "$name: gregor-jepsen exited $rc"
    return "$rc"
}

echo "=== with --planted commit-on-minority (expect lost writes, exit 1)"
planted_rc=0
run planted --planted commit-on-minority || planted_rc=$?
echo "=== the same run without the planted bug (expect valid, exit 0)"
clean_rc=0
run clean || clean_rc=$?

lost=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["anomaly_counts"].get("lost-write",0))' "$OUT/planted/verdict.json")
echo "planted: exit $planted_rc, lost-write anomalies: $lost; clean: exit $clean_rc"
if [[ $planted_rc -eq 1 && $lost -gt 0 && $clean_rc -eq 0 ]]; then
    echo "OK: the planted bug was found and the clean run is valid"
else
    echo "FAILED: expected the planted run to report lost writes and the clean run to be valid" >&2
    exit 1
fi
