#!/usr/bin/env bash
# The GPU checks and GPU figures of the project in one run (at most 9 minutes: each step's limit):
# CUDA tests, `certify` on CUDA for the README's curves, and the certify-overhead, fast-inference, sequential-sampling and
# SimCLR-epoch benchmarks with GPU-sized settings. Each step has its own time limit, so one slow
# step costs only itself. Logs go to the folder given (default: results/gpu).
#
#   bash benchmarks/gpu_checks.sh results/gpu
set -u
out=${1:-results/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, log to $out/NAME.log
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/summary.log"
  tail -n 40 "$out/$name.log"
}

step environment 20 bash -c "nvidia-smi -L; $python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'"
step cuda_tests 60 "$python" -m pytest -q -p no:cacheprovider -k cuda tests
for sigma in 0.12 0.25 0.50 1.00; do  # the README's curves: every 2nd digits test image
  step "certify_sigma$sigma" 30 "$python" -m certify --sigma $sigma --n 100000 --skip 2 \
    --device cuda --batch 20000 --quiet --out "$out/digits_sigma${sigma}_n100000.tsv"
done
step certify_overhead 80 "$python" benchmarks/certify_overhead.py --device cuda --repeats 3 \
  --small-samples 1000000 --small-batches 10000 50000 100000 \
  --resnet-samples 20000 --resnet-batches 1000 4000 10000
step fast_inference 100 "$python" benchmarks/fast_inference.py --device cuda --batch 4096 --rounds 3 \
  --agreement-images 200
step adaptive 100 "$python" benchmarks/adaptive.py --device cuda --batch 20000 --linear-images 100 \
  --digits-skip 6 --cifar-images 8 --cifar-fast
step simclr_epoch 60 "$python" benchmarks/pretrain_throughput.py --device cuda --cpu-steps 2
