#!/usr/bin/env bash
# Run a whole `hdrprep build` as ONE SLURM batch job on one node (local Dask workers, one per
# allocated CPU). The other mode, Dask workers as separate jobs, is `--cluster pipelines/cluster-slurm.yaml`.
#
#   sbatch --export=ALL,SRC=/data/hdr_raw,OUT=/scratch/$USER/shards.zarr pipelines/slurm-build.sh
#   sbatch --cpus-per-task=32 --mem=64G --export=ALL,SRC=...,OUT=...,VENV=$HOME/venvs/hdrprep \
#          pipelines/slurm-build.sh --target-pairs 100000
#
# Environment (pass with --export=ALL,NAME=value,...):
#   SRC     folder of HDR frames                 (default: hdr_raw)
#   OUT     store to create or resume            (default: shards.zarr)
#   PRESET  preset name or YAML path             (default: santos2020)
#   VENV    virtual environment to activate      (default: use `hdrprep` on PATH)
# Arguments after the script name go to `hdrprep build` unchanged (e.g. --limit-frames 10).
# Relative paths are relative to the folder sbatch was run from. The build is resumable: if
# the job hits its time limit, submit it again with the same SRC/OUT/PRESET and it continues.
# Size the request to the data: about 1 GB of memory per CPU for santos2020.
#
#SBATCH --job-name=hdrprep-build
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=02:00:00
#SBATCH --output=hdrprep-build-%j.out
set -euo pipefail

SRC=${SRC:-hdr_raw}
OUT=${OUT:-shards.zarr}
PRESET=${PRESET:-santos2020}
WORKERS=${SLURM_CPUS_PER_TASK:-$(nproc)}

if [ -n "${VENV:-}" ]; then
    [ -f "$VENV/bin/activate" ] || { echo "slurm-build: VENV=$VENV has no bin/activate; give a virtualenv folder" >&2; exit 2; }
    # shellcheck disable=SC1091
    source "$VENV/bin/activate"
fi
command -v hdrprep >/dev/null || {
    echo "slurm-build: 'hdrprep' not found on PATH on $(hostname); pass VENV=/path/to/venv or install hdrprep" >&2
    exit 2
}

# one thread per worker process: the workers already get one core each
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

echo "slurm-build: job ${SLURM_JOB_ID:-none} on $(hostname), ${WORKERS} workers, $(date -Is)"
echo "slurm-build: hdrprep build --src $SRC --out $OUT --preset $PRESET --workers $WORKERS --quiet $*"
status=0
hdrprep build --src "$SRC" --out "$OUT" --preset "$PRESET" --workers "$WORKERS" --quiet "$@" || status=$?
echo "slurm-build: exit code $status after ${SECONDS} s, $(date -Is)"
exit "$status"
