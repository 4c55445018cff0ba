#!/usr/bin/env bash
# One GPU run's share of the CIFAR-10 plan (scripts/cifar10_lease.py), ending within 590 s:
# extract the data copy carried in .lease/, optionally run benchmarks/training_speed.py for at
# most BENCHMARK seconds (its log comes back as training_speed.txt), then the plan's share with
# the time left. Run from the repository root on the GPU machine:
#
#   bash scripts/cifar10_lease.sh "$OUT"          # a run of the plan
#   bash scripts/cifar10_lease.sh "$OUT" 240      # the first run: the speed benchmark too
#
# A dry run on a CPU: CIFAR10_DATA=/tmp/cifar-tiny LEASE_SECONDS=60 \
#   LEASE_FLAGS="--tiny --device cpu" bash scripts/cifar10_lease.sh /tmp/out
set -u
out=${1:?usage: bash scripts/cifar10_lease.sh OUT [BENCHMARK_SECONDS]}
benchmark=${2:-0}
archive=${CIFAR10_ARCHIVE:-.lease/cifar10-jpeg.tar.gz}
data=${CIFAR10_DATA:-/tmp/cifar10-jpeg}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
mkdir -p "$out" "$data"
[ -d "$data/train" ] || tar -xzf "$archive" -C "$data" || exit 1
if [ "$benchmark" -gt 0 ]; then
  timeout "$benchmark" "$python" benchmarks/training_speed.py --device cuda --data-root "$data" \
    --images 20000 --repeats 3 --compile >"$out/training_speed.txt" 2>&1
  echo "== training_speed: exit $? after $SECONDS s"
  cat "$out/training_speed.txt"
fi
budget=$((${LEASE_SECONDS:-560} - SECONDS))
timeout $((budget + 30)) "$python" scripts/cifar10_lease.py run --data "$data" \
  --state docs/cifar10/state --results docs/cifar10/results --out "$out" --budget "$budget" \
  ${LEASE_FLAGS:-}
echo "== cifar10_lease: exit $? after $SECONDS s"
