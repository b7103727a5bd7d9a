#!/usr/bin/env bash
# Refresh constraints.txt: the exact versions the README's commands and .ci/run install.
# Resolves the newest releases of every dependency (all extras) in a throwaway venv, runs the
# test suite there, and writes constraints.txt only if it passes. Usage: bash .ci/refresh-constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q torch==2.13.0   # a plain torch requirement pulls a multi-GB CUDA build
pip install -q -e ".[test,train,jobqueue,plots]"
python -m pytest -q -p no:cacheprovider
{
  echo "# Exact versions that CI tested (python $(python -c 'import platform; print(platform.python_version())')),"
  echo "# made by: bash .ci/refresh-constraints.sh"
  pip freeze --exclude-editable | grep -v '^hdrprep' | sort -f
} > constraints.txt
echo "constraints.txt refreshed ($(grep -vc '^#' constraints.txt) packages)"
