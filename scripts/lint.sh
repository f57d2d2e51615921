#!/usr/bin/env bash
# The lint gates: formatting, clippy, ruff, mypy --strict, and stubtest (the .pyi against the
# compiled module). Any finding fails the script.
#
# stubtest checks the *installed* package (`pip install .` first); scripts/test.sh runs this
# right after that install. A wheel installed from another tree is caught below.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

# Pinned: a newer ruff or mypy may bring new rules or formatting, which should be a deliberate
# change, not a red gate out of the blue.
python3 -m pip install -q --disable-pip-version-check "ruff==0.17.6" "mypy==2.4.1"

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
# The release profile, as the build before it: its build scripts' outputs (SQLite's C, ring's)
# and proc-macros are reused, where the dev profile compiled 106 crates again (3 of CI's minutes).
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== ruff"
python3 -m ruff check python tests bench
python3 -m ruff format --check python tests bench
echo "== mypy --strict"
python3 -m mypy --strict python/myqueue

echo "== stubtest"
# Imported from the repository root, where `myqueue` is not a directory: the installed one.
installed=$(python3 -c 'import myqueue, os; print(os.path.dirname(myqueue.__file__))')
if ! cmp -s "$installed/_native.pyi" python/myqueue/_native.pyi; then
  echo "lint.sh: the installed myqueue ($installed) was not built from this tree;" \
    "run: python3 -m pip install --force-reinstall --no-deps ." >&2
  exit 1
fi
python3 -m mypy.stubtest myqueue._native
echo "lint.sh: all gates passed"
