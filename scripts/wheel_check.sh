#!/usr/bin/env bash
# Build a wheel from the tree, install it into a fresh virtual environment (with constraints.txt,
# so torch comes from local disk), and check that every console script answers --help there.
# Usage: bash scripts/wheel_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m build --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c constraints.txt "$work"/dist/*.whl
scripts=$(sed -n '/^\[project.scripts\]/,/^\[/p' pyproject.toml | sed -n 's/^\([a-z-]*\) = .*/\1/p')
cd "$work"  # away from the source tree: the installed wheel alone must answer
for script in $scripts; do
    "$work/venv/bin/$script" --help > /dev/null
    echo "wheel-check: $script --help ok"
done
"$work/venv/bin/python" -c "import encoders; print('wheel-check: shipped models', encoders.list_pretrained())"
