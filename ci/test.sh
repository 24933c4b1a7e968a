#!/usr/bin/env bash
# Gregor's whole test suite, as CI runs it (.ci/run calls this with no arguments).
#
# Runs on a fresh Debian machine (Rust 1.95, Python 3.11, root) from a clean clone:
# installs what it needs (kcat, a Python venv at ci/.venv with the real-client
# libraries), then: rustfmt, clippy, the engine purity check, the workspace tests,
# the planted-bug tests, the loom models, a release build, simulator seeds (single node
# and 3-node cluster), and the real-client tests
# against the release `gregor`.
#
# Usage: ci/test.sh [options] [-- extra pytest args]
#   --long            5,000 simulator seeds (1..=5000) instead of 200 (1..=200), and
#                     2,000 three-node cluster seeds instead of 300
#   --seeds RANGE     this simulator seed range (A..B excludes B, A..=B includes it)
#   --cluster-seeds RANGE  this three-node cluster seed range (default 1..=300)
#   --clients-only    only build the release gregor and run the real-client tests
#   --no-clients      skip the real-client tests
#   --no-jepsen       skip the 60-second gregor-jepsen smoke run
#   -h, --help        this text
# Environment: CARGO_TARGET_DIR is honoured; GREGOR_CI_PYTHON picks the Python.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SEEDS="1..=200"
CLUSTER_SEEDS="1..=300"
CLIENTS_ONLY=0
NO_CLIENTS=0
NO_JEPSEN=0
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --long) SEEDS="1..=5000"; CLUSTER_SEEDS="1..=2000" ;;
        --seeds) SEEDS="${2:?--seeds needs a range like 1..200}"; shift ;;
        --cluster-seeds) CLUSTER_SEEDS="${2:?--cluster-seeds needs a range like 1..=300}"; shift ;;
        --clients-only) CLIENTS_ONLY=1 ;;
        --no-clients) NO_CLIENTS=1 ;;
        --no-jepsen) NO_JEPSEN=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) echo "ci/test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/ci/.venv"
LOG_DIR="$ROOT/ci/.logs"
REQUIREMENTS="$ROOT/node/tests/clients/requirements.txt"
mkdir -p "$LOG_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
if [[ "${CI:-}" == "true" ]]; then
    export CARGO_INCREMENTAL=0
fi

T0=$SECONDS
SECTION_NAMES=()
SECTION_TIMES=()
CURRENT=""
CURRENT_T0=0

fmt_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

end_section() {
    if [[ -n "$CURRENT" ]]; then
        SECTION_NAMES+=("$CURRENT")
        SECTION_TIMES+=($((SECONDS - CURRENT_T0)))
        CURRENT=""
    fi
}

section() {
    end_section
    CURRENT="$1"
    CURRENT_T0=$SECONDS
    echo
    echo "==================================================================="
    echo "=== $1   (at $(fmt_time $((SECONDS - T0))))"
    echo "==================================================================="
}

summary() {
    local rc=$?
    local failed="$CURRENT"
    end_section
    echo
    echo "=== summary ==="
    local i
    for i in "${!SECTION_NAMES[@]}"; do
        printf '  %-62s %s\n' "${SECTION_NAMES[$i]}" "$(fmt_time "${SECTION_TIMES[$i]}")"
    done
    echo "  total: $(fmt_time $((SECONDS - T0)))"
    if [[ $rc -ne 0 ]]; then
        echo "ci/test.sh: FAILED (exit $rc) in section: ${failed:-setup}"
    else
        echo "ci/test.sh: all sections passed"
    fi
}
trap summary EXIT

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# ---------------------------------------------------------------------------------------
section "setup: tools"
cargo --version
rustc --version
# The Jepsen smoke run's partitions are nftables rules inside network namespaces.
if [[ $CLIENTS_ONLY -eq 0 && $NO_JEPSEN -eq 0 ]]; then
    command -v nft >/dev/null || apt_install nftables || true
fi
if [[ $CLIENTS_ONLY -eq 0 ]]; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

PY=""
if [[ $NO_CLIENTS -eq 0 ]]; then
    command -v kcat >/dev/null || apt_install kcat
    kcat -V 2>&1 | sed -n 1p

    base_python="${GREGOR_CI_PYTHON:-python3}"
    "$base_python" --version
    want_stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$base_python" --version 2>&1)"
    if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.requirements.stamp" 2>/dev/null)" == "$want_stamp" ]]; then
        echo "python venv $VENV is up to date"
        PY="$VENV/bin/python"
    else
        rm -rf "$VENV"
        if ! "$base_python" -m venv "$VENV" 2>"$LOG_DIR/venv.err"; then
            # Debian's python3 needs python3-venv for ensurepip.
            rm -rf "$VENV"
            apt_install python3-venv || true
            "$base_python" -m venv "$VENV" 2>>"$LOG_DIR/venv.err" || rm -rf "$VENV"
        fi
        if [[ -x "$VENV/bin/python" ]]; then
            PY="$VENV/bin/python"
            "$PY" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
            echo "$want_stamp" >"$VENV/.requirements.stamp"
        else
            echo "no venv possible ($(tail -1 "$LOG_DIR/venv.err")); installing with pip --user"
            PY="$base_python"
            "$PY" -m pip install -q --disable-pip-version-check --user -r "$REQUIREMENTS" ||
                "$PY" -m pip install -q --disable-pip-version-check --user --break-system-packages -r "$REQUIREMENTS"
        fi
    fi
    "$PY" -c 'import confluent_kafka, kafka, aiokafka, pytest; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)'
fi

if [[ $CLIENTS_ONLY -eq 0 ]]; then
    # -----------------------------------------------------------------------------------
    section "cargo fmt --check"
    if [[ -t 1 ]]; then cargo fmt --all -- --check; else cargo fmt --all -- --check --color never; fi

    section "cargo clippy -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings

    section "engine purity (ci/check-engine-pure.sh)"
    "$ROOT/ci/check-engine-pure.sh"

    section "cargo test --workspace"
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
        cargo test --workspace --doc
    else
        cargo test --workspace
    fi

    # The workspace's feature set plus the planted bugs (not `-p gregor-sim`, whose smaller
    # feature set rebuilds serde, syn, tracing, ...): only the engine and the simulator build
    # again. sim/tests/planted.rs is the one test that needs the feature.
    section "planted bugs: cargo test --features gregor-sim/planted-bugs --test planted"
    cargo test --workspace --features gregor-sim/planted-bugs --test planted

    section "loom: the shell's shared structures (peer queues, disk handle cache)"
    # A feature of gregor-net alone, with the workspace's feature set otherwise: only
    # gregor-net builds again.
    cargo test --workspace --features gregor-net/loom --test loom_queue --test loom_handles
fi

# ---------------------------------------------------------------------------------------
section "release build"
if [[ $CLIENTS_ONLY -eq 1 ]]; then
    cargo build --release --bin gregor
else
    cargo build --release --bin gregor --bin gregor-sim
fi
GREGOR_BIN="$TARGET_DIR/release/gregor"
test -x "$GREGOR_BIN" || { echo "missing $GREGOR_BIN after the build" >&2; exit 1; }

if [[ $CLIENTS_ONLY -eq 0 ]]; then
    section "simulator: gregor-sim --seeds $SEEDS"
    sim_log="$LOG_DIR/gregor-sim.log"
    set +e
    "$TARGET_DIR/release/gregor-sim" --seeds "$SEEDS" >"$sim_log" 2>&1
    sim_rc=$?
    set -e
    echo "gregor-sim exited $sim_rc; $(wc -l <"$sim_log") lines of output in $sim_log; last lines:"
    tail -n 15 "$sim_log"
    if [[ $sim_rc -ne 0 ]]; then
        echo "--- lines naming failures ---"
        grep -n -i -E 'fail|violat|panic|reproduce|error' "$sim_log" | head -n 60 || true
        exit "$sim_rc"
    fi

    # Three brokers over the simulated peer network: partitions, loss, pauses, crashes,
    # disk faults; per-step Raft invariants plus the history checks. -q keeps the log to the
    # JSON lines and failures (each failure prints its replay command, --nodes included).
    section "simulator: gregor-sim --nodes 3 --seeds $CLUSTER_SEEDS"
    cluster_log="$LOG_DIR/gregor-sim-cluster.log"
    set +e
    "$TARGET_DIR/release/gregor-sim" --nodes 3 --seeds "$CLUSTER_SEEDS" -q >"$cluster_log" 2>&1
    sim_rc=$?
    set -e
    echo "gregor-sim --nodes 3 exited $sim_rc; $(wc -l <"$cluster_log") lines of output in $cluster_log; last lines:"
    tail -n 5 "$cluster_log"
    if [[ $sim_rc -ne 0 ]]; then
        echo "--- lines naming failures ---"
        grep -n -i -E 'fail|violat|panic|replay|error' "$cluster_log" | head -n 60 || true
        exit "$sim_rc"
    fi
fi

if [[ $NO_CLIENTS -eq 0 ]]; then
    # -----------------------------------------------------------------------------------
    section "real clients: pytest node/tests/clients"
    set +e
    GREGOR_BIN="$GREGOR_BIN" "$PY" -m pytest "$ROOT/node/tests/clients" \
        --durations=8 "${PYTEST_ARGS[@]}"
    py_rc=$?
    set -e
    if [[ $py_rc -eq 5 ]]; then
        echo "pytest collected no tests: the real-client suite is missing" >&2
        exit 1
    fi
    [[ $py_rc -eq 0 ]] || exit "$py_rc"
fi

if [[ $CLIENTS_ONLY -eq 0 && $NO_JEPSEN -eq 0 ]]; then
    # -----------------------------------------------------------------------------------
    # A real 3-node cluster in network namespaces, librdkafka clients, kills, pauses and
    # partitions for 60 s, then the checker. The dev-profile harness: clippy and the tests
    # already built librdkafka for it, and it only drives ~100 ops/s.
    section "jepsen smoke: gregor-jepsen --nodes 3 --time-limit 60"
    probe="gjci$$"
    if ! command -v nft >/dev/null; then
        echo "SKIPPED: no nft (nftables) on this machine, so the harness cannot partition the network"
    elif ! ip netns add "$probe" 2>/dev/null; then
        echo "SKIPPED: cannot create network namespaces here (needs root and ip netns)"
    else
        ip netns del "$probe"
        # `cargo test --workspace` above built the binary (jepsen/tests needs it); a build
        # of the package alone would unify features differently and rebuild librdkafka.
        [[ -x "$TARGET_DIR/debug/gregor-jepsen" ]] || cargo build -p gregor-jepsen --bin gregor-jepsen
        jepsen_dir="$LOG_DIR/jepsen-smoke"
        rm -rf "$jepsen_dir"
        set +e
        "$TARGET_DIR/debug/gregor-jepsen" --nodes 3 --time-limit 60 --seed 1 \
            --nemesis kill,pause,partition,kill-leader --nemesis-interval 10 \
            --final-wait 5 --final-time-limit 60 --prefix gjci \
            --gregor "$GREGOR_BIN" --results "$jepsen_dir" 2>&1 | tail -n 25
        jepsen_rc=${PIPESTATUS[0]}
        set -e
        echo "gregor-jepsen exited $jepsen_rc; results in $jepsen_dir"
        [[ $jepsen_rc -eq 0 ]] || exit "$jepsen_rc"
    fi
fi
