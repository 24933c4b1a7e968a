#!/usr/bin/env bash
# The engine is sans-IO and deterministic (DESIGN.md, "The engine contract"). This check
# fails when gregor-engine depends on an async runtime or a socket crate, or when its
# source touches the filesystem, the network, threads, clocks, the global RNG, or uses a
# HashMap/HashSet (iteration order would vary). A HashMap that is only looked up, never
# iterated, is allowed on a line carrying the comment `// pure: lookup-only`.
#
# Comment lines (//, //!, ///) are not checked: docs may name what the code must not use.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0

echo "check-engine-pure: dependencies of gregor-engine (normal edges)"
tree="$(cargo tree -p gregor-engine -e normal --prefix none --format '{p}')"
bad_deps="$(printf '%s\n' "$tree" | awk '{print $1}' | grep -E -x 'tokio|mio|socket2|async-std|async-io|smol|polling' | sort -u || true)"
if [[ -n "$bad_deps" ]]; then
    echo "FAIL: gregor-engine depends on: $(echo "$bad_deps" | tr '\n' ' ')"
    echo "      (cargo tree -p gregor-engine -e normal -i <crate> shows the path)"
    status=1
fi

echo "check-engine-pure: engine/src"
# Comments are stripped before matching (whole-line and trailing `//`), so docs may name
# what the code must not use; the allow-comment is read from the original line.
violations="$(python3 - engine/src <<'PY'
import pathlib, re, sys

FORBIDDEN = re.compile(
    r"std::(fs|net|thread)\b"                 # std::fs::File, use std::net;
    r"|std::\{[^}]*\b(fs|net|thread)\b"        # use std::{fs, io};
    r"|\bInstant::now\b|\bSystemTime::now\b"
    r"|\bthread_rng\b|\brand::rng\(|\brand::random\b|\bOsRng\b|\bfrom_entropy\b"
    r"|\btokio::")
HASHED = re.compile(r"\bHash(Map|Set)\b")
ALLOW = "// pure: lookup-only"

for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.rs")):
    for no, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//", 1)[0]
        if FORBIDDEN.search(code):
            print(f"{path}:{no}: {line.strip()}")
        elif HASHED.search(code) and ALLOW not in line:
            print(f"{path}:{no}: {line.strip()}   <- HashMap/HashSet needs `{ALLOW}`")
PY
)"
if [[ -n "$violations" ]]; then
    echo "FAIL: engine/src must not do IO, read clocks, spawn threads, use the global RNG or hash-ordered maps:"
    printf '%s\n' "$violations"
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "check-engine-pure: ok"
fi
exit $status
