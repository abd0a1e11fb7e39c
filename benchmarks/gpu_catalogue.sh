#!/usr/bin/env bash
# The full preset's first catalogue snapshot on a CUDA machine (the scale issue's GPU figure), from
# the repository root of a machine where `make install` works (Python 3.11, the package index
# reachable):
#
#     bash benchmarks/gpu_catalogue.sh install     # make install, then hm-synth's full preset (no oracle)
#     bash benchmarks/gpu_catalogue.sh run         # every catalogue step timed on cuda, table in $OUT
#
# Two calls so that each stays under 10 minutes. The table (seconds and peak RSS per step, as
# bench_stages.py prints it) and nvidia-smi's view of the GPU are written to $OUT (default
# /tmp/gpu-catalogue) as gpu-catalogue.md and gpu.txt. Not runnable as it stands on a machine that
# reaches no package index: the project's dependencies and the 87 MiB text model would have to
# travel with it.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(realpath -m "${GPU_DATA_DIR:-/tmp/hm_full_gpu}")
home=$(realpath -m "${GPU_HM_HOME:-/tmp/bench_full_gpu}")
out=$(realpath -m "${OUT:-/tmp/gpu-catalogue}")
case "${1:-}" in
    install)
        make install
        [ -f "$data/articles.csv" ] || .venv/bin/hm-synth "$data" --preset full --seed 0 --no-oracle -q
        ;;
    run)
        mkdir -p "$out" && rm -rf "$home" && mkdir -p "$home"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
        cd benchmarks
        HM_DATA_DIR="$data" HM_HOME="$home" OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 \
            ../.venv/bin/python bench_stages.py --week 2020-09-16 --device cuda \
            --stages catalogue,text_embeddings,image_embeddings,attribute_embeddings,text_index,image_index,attribute_index \
            | tee "$out/gpu-catalogue.md"
        ;;
    *)
        echo "usage: bash benchmarks/gpu_catalogue.sh install|run" >&2
        exit 2
        ;;
esac
