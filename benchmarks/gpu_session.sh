#!/usr/bin/env bash
# Every GPU check the open issues ask for, in one device run of about 8 minutes; results under $OUT.
#
# The device image has torch, typer, rich and matplotlib but not monai, nibabel or pydicom (SimpleITK
# is imported lazily and not needed). Prepare once, here, in the repository root:
#
#   echo /.whl/ >> .git/info/exclude; echo /.gpu-data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2
#   mkdir -p .gpu-data && cp /tmp/mni/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz .gpu-data/mni.nii.gz
#
# then call the device tool with command "bash benchmarks/gpu_session.sh", carry [".whl", ".gpu-data"]
# and timeout_s 590 (the steps' limits add up to 530 s). Each step has its own time limit, so one slow step cannot eat the others.
set -u
OUT=${OUT:-/tmp/mrisr-gpu}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a smoke run of this script without a GPU
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

step() {  # step NAME SECONDS COMMAND...: output to $OUT/NAME.txt, its tail to the console
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout -s KILL "$limit" "$@" >"$OUT/$name.txt" 2>&1  # KILL: mrisr finishes a study on TERM
    echo "rc=$? seconds=$((SECONDS - t0))" >>"$OUT/$name.txt"
    echo "== $name"
    tail -n 4 "$OUT/$name.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch; print('torch', torch.__version__)"; nproc; } >"$OUT/machine.txt" 2>&1

# Issue 3: the GPU path agrees with the CPU path (both networks, tiling, AMP, batch sizing).
step gpu-tests 80 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -o addopts=""
# Issue 7: throughput per precision/layout/compile, and the tool path against the bare forward.
step bench-gpu-srcnn 100 python3 benchmarks/bench_gpu.py --arch srcnn --slices 256 --size 256 --device "$DEVICE"
step bench-gpu-espcn 60 python3 benchmarks/bench_gpu.py --arch espcn --slices 256 --size 256 --device "$DEVICE"
# Issue 7: a study end to end against its I/O floor (read + write in the same format).
step bench-e2e 60 python3 benchmarks/bench_e2e.py --shape 256,256,64 --device "$DEVICE" --arch espcn --repeat 3
# Issues 4 and 7: the shipped ESPCN recipe on the GPU, first 5,000 of its 10,000 steps (patches/s,
# validation per epoch as in docs/weights.md; resume with --resume for the rest).
if [ -f .gpu-data/mni.nii.gz ]; then
    step train-espcn 130 python3 -m mrisr.cli train .gpu-data --out /tmp/gtrain --arch espcn --scale 4 \
        --epochs 40 --steps-per-epoch 250 --batch-size 16 --patch-size 64 --lr 1e-3 --degradation mixed \
        --filters 64,32 --residual --loss mse --seed 0 --device "$DEVICE" --workers 8 --max-steps 5000
    cp /tmp/gtrain/metrics.csv "$OUT/train-metrics.csv" 2>/dev/null
    cp /tmp/gtrain/best.pt "$OUT/gpu-espcn-best.pt" 2>/dev/null
fi
# Issue 8: adaptation and through-plane time on the GPU, on nibabel's real EPI (held out).
python3 - <<'EOF'
import os, nibabel as nib, numpy as np
p = os.path.join(os.path.dirname(nib.__file__), "tests/data/example4d.nii.gz")
i = nib.load(p)
nib.save(nib.Nifti1Image(np.asarray(i.dataobj)[..., 0], i.affine), "/tmp/epi0.nii.gz")
EOF
step adapt-inplane 50 python3 benchmarks/heldout.py /tmp/epi0.nii.gz --mode box -- --adapt --device "$DEVICE"
step adapt-thick 50 python3 benchmarks/heldout.py /tmp/epi0.nii.gz --mode thick -- --device "$DEVICE"
echo "done; files in $OUT"
