#!/usr/bin/env bash
# Every GPU check of pyrovae in one go, each step under its own time limit, a log per step:
#
#   device-tests     tests/test_device.py and tests/test_objectives.py on CUDA (training,
#                    sources, IS, AIS, NUTS, densities against the CPU, synchronizations)
#   train-128        seconds per epoch against the plain PyTorch loop, z=50, batch 128
#   train-1024       the same at batch 1024
#   train-128-compiled  both sides with torch.compile
#   train-128-jit    pyrovae with Pyro's JIT ELBO (the plain loop eager)
#   train-burda      the shape of Burda et al. (2016): 200 200 tanh, batch 20, JIT
#   loglik-speed     the IS estimator against the decoder floor, K=5000, 1,000 test images
#   evaluate-k5000   `pyrovae evaluate` with K=5000 on all 10,000 test images (prior,
#                    gaussian-z, gmm and the exact aggregate over 50,000 encodings)
#   ais-speed        AIS against the decoder floor
#   nccl-train       `torchrun -m pyrovae train` on the nccl backend (one process per GPU)
#
# usage: bash benchmarks/gpu_suite.sh RUN_DIR DATA_ROOT [LOG_DIR]
#   RUN_DIR   a trained z=50 run (for the log-likelihood steps); it is copied, not written
#   DATA_ROOT a directory holding MNIST/raw
# pyrovae must be installed (pip install . or -e .); the steps run outside the checkout.
# DEVICE=cpu QUICK=1 runs the same steps on small budgets on the CPU (to check the script).
set -u
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/gpu_suite.sh RUN_DIR DATA_ROOT [LOG_DIR]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "${3:-gpu-logs}"
run=$(realpath "$1")
data=$(realpath "$2")
logs=$(realpath "${3:-gpu-logs}")
device=${DEVICE:-cuda}
quick=${QUICK:-0}
python=${PYTHON:-python3}
work=$(mktemp -d)
cp -r "$run" "$work/run"
export PYTHONUNBUFFERED=1 PYROVAE_CACHE="$work/cache"
# run outside the checkout, so that the installed package is imported, not ./pyrovae
cd "$work" || exit 1

if [ "$quick" = 1 ]; then
    repeats=1 k=50 n_ll=20 n_eval=40 n_train=500 steps=5 subset=2000
else
    repeats=3 k=5000 n_ll=1000 n_eval=10000 n_train=50000 steps=50 subset=50000
fi

status=0
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || status=1
    echo "== $name: rc $rc, $((SECONDS - start)) s"
    tail -n 6 "$logs/$name.log"
}

{
    "$python" -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
    if [ "$device" = cuda ]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
} >"$logs/environment.txt" 2>&1
cat "$logs/environment.txt"

step device-tests 300 env PYROVAE_TEST_DEVICE="$device" PYROVAE_TEST_DATA="$data" \
    "$python" -m pytest -q -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" \
    "$repo/tests/test_device.py" "$repo/tests/test_objectives.py" "$repo/tests/test_datum_noise.py"
step train-128 240 "$python" "$repo"/benchmarks/train_speed.py --device "$device" --data-root "$data" \
    --repeats "$repeats" --batch-size 128 --out "$work/train-128"
step train-1024 120 "$python" "$repo"/benchmarks/train_speed.py --device "$device" --data-root "$data" \
    --repeats "$repeats" --batch-size 1024 --out "$work/train-1024"
step train-128-compiled 300 "$python" "$repo"/benchmarks/train_speed.py --device "$device" \
    --data-root "$data" --repeats "$repeats" --batch-size 128 --compile --out "$work/train-c"
step train-128-jit 180 "$python" "$repo"/benchmarks/train_speed.py --device "$device" \
    --data-root "$data" --repeats "$repeats" --batch-size 128 --jit --out "$work/train-j"
step train-burda 240 "$python" "$repo"/benchmarks/train_speed.py --device "$device" \
    --data-root "$data" --repeats 1 --batch-size 20 --hidden-dims 200 200 --activation tanh \
    --jit --out "$work/train-b"
step loglik-speed 240 "$python" "$repo"/benchmarks/loglik_speed.py --device "$device" --run-dir "$work/run" \
    --data-root "$data" --num-data "$n_ll" --num-samples "$k" --repeats "$repeats"
step evaluate-k5000 480 "$python" -m pyrovae evaluate "$work/run" --device "$device" \
    --data-root "$data" --num-samples "$k" --num-test "$n_eval" --num-train "$n_train" \
    --sources prior gaussian-z gmm aggregate --no-quality --out "$logs/evaluation-k$k.json"
step ais-speed 180 "$python" "$repo"/benchmarks/ais_speed.py --device "$device" --run-dir "$work/run" \
    --data-root "$data" --num-steps "$steps" --repeats "$repeats"
step nccl-train 180 "$python" -m torch.distributed.run --standalone --nproc_per_node 1 \
    -m pyrovae train --device "$device" --data-root "$data" --epochs 2 --subset "$subset" \
    --z-dim 50 --out "$work/ddp-run"
cp "$work/ddp-run/metrics.csv" "$logs/nccl-train-metrics.csv" 2>/dev/null
rm -rf "$work"
exit $status
