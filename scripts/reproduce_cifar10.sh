#!/usr/bin/env bash
# CIFAR-10 at the scale of a CPU: Cohen et al.'s ResNet-20 trained three ways at one sigma,
# certified, attacked and audited. Every step is a command of the toolkit that resumes when rerun,
# so this script is rerun until done: on a workstation, as a SLURM job that is requeued when
# preempted (sbatch --requeue --signal=TERM@120), or on a cloud machine that may be reclaimed.
#
#   bash scripts/reproduce_cifar10.sh DATA_ROOT [STEP ...]
#
# DATA_ROOT holds the data in folder layout: DATA_ROOT/{train,test}/<class>/<image> (the JPEG copy
# of CIFAR-10, --dataset cifar10-jpeg). Steps, in order (default: all of them):
#   simclr       SimCLR pre-training of the ResNet-20 encoder (40 epochs, batch 256, Adam)
#   baseline     Cohen et al.'s baseline: noise training from random weights (30 epochs)
#   rush         RUSH: the SimCLR encoder, then noise training of the whole network (30 epochs)
#   consistency  RUSH with the consistency loss of Jeong and Shin (2020), m = 2 (30 epochs)
#   ship         float16 copies of the three classifiers under encoders/pretrained/
#   evaluate     linear probe of the encoder; clean and noisy accuracy of the classifiers
#   certify      every 50th test image (200) at n = 10,000; the RUSH model's every 500th at 100,000
#   figure       the curves and the table of docs/cifar10/
# Environment: SIGMA (0.25), RUNS (runs/cifar10: training checkpoints), DOCS (docs/cifar10:
# results), BIN (.venv/bin), TIME_LIMIT (e.g. 5.5h: training stops cleanly before it), THREADS
# (torch threads of each command), DEVICE (cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: bash scripts/reproduce_cifar10.sh DATA_ROOT [STEP ...]" >&2; exit 2; }
DATA=$1
shift
STEPS=${*:-simclr baseline rush consistency ship evaluate certify figure}
SIGMA=${SIGMA:-0.25}
RUNS=${RUNS:-runs/cifar10}
DOCS=${DOCS:-docs/cifar10}
BIN=${BIN:-.venv/bin}
DEVICE=${DEVICE:-cpu}
[ -z "${THREADS:-}" ] || export OMP_NUM_THREADS=$THREADS
LIMIT=()
[ -z "${TIME_LIMIT:-}" ] || LIMIT=(--time-limit "$TIME_LIMIT")
mkdir -p "$RUNS" "$DOCS/results"

DATA_FLAGS=(--dataset cifar10-jpeg --root "$DATA" --device "$DEVICE" --channels-last)
# Cohen et al.'s optimiser (SGD, momentum 0.9, lr 0.1, weight decay 1e-4, batch 256, crops and
# flips), with a cosine schedule over 30 epochs instead of their 90 with steps.
NOISE_TRAINING=(--sigma "$SIGMA" --preset cohen --epochs 30 --schedule cosine)
SIMCLR=$RUNS/simclr-r20.pt
declare -A OUT=(
    [baseline]=$RUNS/cohen-r20-sigma$SIGMA.pt
    [rush]=$RUNS/rush-r20-sigma$SIGMA.pt
    [consistency]=$RUNS/rush-consistency-r20-sigma$SIGMA.pt
)
declare -A SHIPPED=(
    [baseline]=cifar10-cohen-sigma$SIGMA
    [rush]=cifar10-rush-sigma$SIGMA
    [consistency]=cifar10-rush-consistency-sigma$SIGMA
)

trained() {  # a training step is done once its checkpoint exists (a partial run has <out>.partial)
    [ -f "$1" ] || { echo "$1 is not trained yet: run its step first" >&2; return 1; }
}

for step in $STEPS; do
    echo "== $step"
    case $step in
    simclr)
        "$BIN/encoders-pretrain" "${DATA_FLAGS[@]}" --arch cifar_resnet20 --epochs 40 \
            --batch-size 256 --out "$SIMCLR" "${LIMIT[@]}" ;;
    baseline)
        [ -f "${OUT[baseline]}" ] || "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --arch cifar_resnet20 "${NOISE_TRAINING[@]}" --out "${OUT[baseline]}" "${LIMIT[@]}" ;;
    rush)
        trained "$SIMCLR"
        [ -f "${OUT[rush]}" ] || "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --encoder "$SIMCLR" "${NOISE_TRAINING[@]}" --out "${OUT[rush]}" "${LIMIT[@]}" ;;
    consistency)
        trained "$SIMCLR"
        [ -f "${OUT[consistency]}" ] || "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --encoder "$SIMCLR" "${NOISE_TRAINING[@]}" --recipe consistency \
            --out "${OUT[consistency]}" "${LIMIT[@]}" ;;
    ship)
        for model in baseline rush consistency; do
            shipped=encoders/pretrained/${SHIPPED[$model]}.pt
            if [ -f "${OUT[$model]}" ] && [ ! -f "$shipped" ]; then
                "$BIN/python" -c "import sys; from encoders.checkpoint import half_precision_copy; \
half_precision_copy(sys.argv[1], sys.argv[2])" "${OUT[$model]}" "$shipped"
                echo "shipped $shipped"
            fi
        done ;;
    evaluate)
        trained "$SIMCLR"
        "$BIN/python" scripts/evaluate_classifiers.py --dataset cifar10-jpeg --data-root "$DATA" \
            --sigma "$SIGMA" --encoder "$SIMCLR" --device "$DEVICE" \
            --out "$DOCS/results/accuracy_sigma$SIGMA.md" \
            --classifiers "${SHIPPED[baseline]}" "${SHIPPED[rush]}" "${SHIPPED[consistency]}" ;;
    certify)
        for model in baseline rush consistency; do
            "$BIN/certify" --model "${SHIPPED[$model]}" --dataset cifar10-jpeg --data-root "$DATA" \
                --sigma "$SIGMA" --skip 50 --n 10000 --batch 1000 --device "$DEVICE" --quiet \
                --out "$DOCS/results/${SHIPPED[$model]}_n10000.tsv"
        done
        "$BIN/certify" --model "${SHIPPED[rush]}" --dataset cifar10-jpeg --data-root "$DATA" \
            --sigma "$SIGMA" --skip 500 --n 100000 --batch 1000 --device "$DEVICE" --quiet \
            --out "$DOCS/results/${SHIPPED[rush]}_n100000.tsv" ;;
    figure)
        "$BIN/certify-plot" "$DOCS"/results/cifar10-*-sigma"$SIGMA"_n10000.tsv \
            --radii 0 0.25 0.5 0.75 1 --out "$DOCS/certified_accuracy_sigma$SIGMA.png" ;;
    *)
        echo "unknown step $step" >&2
        exit 2 ;;
    esac
done
