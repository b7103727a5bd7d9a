#!/usr/bin/env bash
# Refresh constraints.txt: the exact versions the README's commands and .ci/run install.
# Resolves the newest releases of every dependency (all extras) in a throwaway venv, runs the
# test suite there, and writes constraints.txt only if it passes. Usage: bash .ci/refresh-constraints.sh
# With --eval it refreshes constraints-eval.txt instead: the 'eval' extra (ColorVideoVDP), whose
# torchvision needs torch 2.14.1 (a 5.8 GB environment), tested with tests/test_evaluate.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
. "$venv/bin/activate"
if [ "${1:-}" = "--eval" ]; then
  out=constraints-eval.txt
  pip install -q torch==2.14.1 torchvision==0.29.1
  pip install -q -e ".[test,train,eval]"
  python -m pytest -q -p no:cacheprovider tests/test_evaluate.py tests/test_quality.py
else
  out=constraints.txt
  pip install -q torch==2.13.0   # a plain torch requirement pulls a multi-GB CUDA build
  pip install -q -e ".[test,train,jobqueue,plots]"
  python -m pytest -q -p no:cacheprovider
fi
{
  echo "# Exact versions that were tested (python $(python -c 'import platform; print(platform.python_version())')),"
  echo "# made by: bash .ci/refresh-constraints.sh ${1:-}"
  pip freeze --exclude-editable | grep -v '^hdrprep' | sort -f
} > "$out"
echo "$out refreshed ($(grep -vc '^#' "$out") packages)"
