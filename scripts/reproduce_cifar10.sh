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
#   ship         float16 copies of the three classifiers into MODELS (encoders/pretrained/, the
#                models shipped in the wheel); every later step evaluates these copies
#   evaluate     clean and noisy accuracy of the shipped classifiers; the encoder's linear probe
#   certify      every 50th test image (200) at n = 10,000; the RUSH model's every 500th at 100,000
#   figure       the curves and the table of docs/cifar10/, with the models paired image by image
#   attack       the 200 images under PGD on the base classifier, naive PGD and EOT-PGD (32 draws)
#                on the smoothed one: L-inf 8/255, L2 0.25 / 0.5 / 1.0; predict at n = 1,000
#   claim        the table of the RUSH claim: accuracies with intervals, naive vs EOT paired,
#                and every two models paired under each attack
#   audit        every certificate attacked with L2 EOT-PGD just inside its radius
#   ladder       the RUSH model's attack ladder on every 200th test image (50): EOT draws 1 / 8 /
#                32 / 128, steps 20 / 100, restarts 1 / 5
#   adaptive     samples per image of the sequential modes against fixed n on the 200 images,
#                from the certify step's results (each model's certify run must be finished)
# Two more steps carry unfinished training to another machine (not run by default):
#   pack         float16 copies, without optimizer state, of the unfinished runs into DOCS/training,
#                and the finished SimCLR encoder as it is (the RUSH runs start from its weights)
#   unpack       copy them back into RUNS where RUNS lacks the run (momentum restarts; nothing else)
# Environment: SIGMA (0.25), RUNS (runs/cifar10: training checkpoints), DOCS (docs/cifar10:
# results), BIN (.venv/bin), THREADS (torch threads of each command), DEVICE (cpu), MODELS
# (encoders/pretrained), and one of two bounds on the time:
#   TIME_LIMIT   e.g. 5.5h: each training, certify, attack, audit and ladder command stops
#                cleanly before it, resumably
#   DEADLINE     a time that `date -d` reads, e.g. 17:30 or "2026-12-06 08:00": those commands stop
#                cleanly, resumably, after the last epoch or image they expect to finish by then
#                (at least one), and no training, certify, attack, audit, ladder or adaptive
#                command starts less than a minute before it (the quick steps still run)
# The scale, for a quick trial of the whole plan:
# SIMCLR_EPOCHS (40), NOISE_EPOCHS (30), N (10000), N_LARGE (100000; 0: no run at the larger n),
# SKIP (50), SKIP_LARGE (500), LADDER_SKIP (200),
# LADDER_GRID ("--eot-samples 1 8 32 128 --steps 20 100 --restarts 1 5"),
# LADDER_BATCH (5 images attacked at once: a kill loses at most that chunk, about 18 min on 2
# idle cores at the strongest rung), ATTACK_N (1000: predict's samples after an attack).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { echo "usage: bash scripts/reproduce_cifar10.sh DATA_ROOT [STEP ...]" >&2; exit 2; }
DATA=$1
shift
STEPS=${*:-simclr baseline rush consistency ship evaluate certify figure attack claim audit ladder adaptive}
SIGMA=${SIGMA:-0.25}
# in file and model names, as the digits models: sigma0.50
SIGMA_NAME=$(awk -v s="$SIGMA" 'BEGIN { printf "%.2f", s }')
RUNS=${RUNS:-runs/cifar10}
DOCS=${DOCS:-docs/cifar10}
BIN=${BIN:-.venv/bin}
DEVICE=${DEVICE:-cpu}
MODELS=${MODELS:-encoders/pretrained}
[ -z "${THREADS:-}" ] || export OMP_NUM_THREADS=$THREADS
SIMCLR_EPOCHS=${SIMCLR_EPOCHS:-40}
NOISE_EPOCHS=${NOISE_EPOCHS:-30}
N=${N:-10000}
N_LARGE=${N_LARGE:-100000}
SKIP=${SKIP:-50}
SKIP_LARGE=${SKIP_LARGE:-500}
LADDER_SKIP=${LADDER_SKIP:-200}
read -r -a LADDER_GRID <<< "${LADDER_GRID:---eot-samples 1 8 32 128 --steps 20 100 --restarts 1 5}"
LADDER_BATCH=${LADDER_BATCH:-5}
ATTACK_N=${ATTACK_N:-1000}
radii() {  # every 0.25 from $1 up to $2 times SIGMA
    awk -v s="$SIGMA" -v from="$1" -v to="$2" \
        'BEGIN { for (r = from; r <= to * s + 1e-9; r += 0.25) printf "%g ", r }'
}
# Radii of the curves: up to 4 sigma (past the largest radius n = 10,000 certifies, about 3.2
# sigma), which are also the curve radii of the adaptive mode; the sequential modes target those
# from 0.25 to 3 sigma.
read -r -a RADII <<< "$(radii 0 4)"
read -r -a TARGET_RADII <<< "$(radii 0.25 3)"
if [ -n "${TIME_LIMIT:-}" ] && [ -n "${DEADLINE:-}" ]; then
    echo "set TIME_LIMIT or DEADLINE, not both" >&2
    exit 2
fi
if [ -n "${DEADLINE:-}" ]; then
    END=$(date -d "$DEADLINE" +%s 2> /dev/null) || {
        echo "DEADLINE: date cannot read '$DEADLINE'" >&2
        exit 2
    }
fi
seconds_left() { echo $((END - $(date +%s))); }
starts() {  # may the long command $1 start? Not within a minute of DEADLINE
    if [ -z "${DEADLINE:-}" ] || [ "$(seconds_left)" -ge 60 ]; then
        return 0
    fi
    echo "not starting $(basename "$1"): less than a minute before DEADLINE, $(date -d "@$END")"
    return 1
}
bounded() {  # run a long command (training, certify, attack, audit, ladder) under TIME_LIMIT or DEADLINE
    starts "$1" || return 0
    if [ -n "${DEADLINE:-}" ]; then
        "$@" --time-limit "$(seconds_left)"
    elif [ -n "${TIME_LIMIT:-}" ]; then
        "$@" --time-limit "$TIME_LIMIT"
    else
        "$@"
    fi
}
mkdir -p "$RUNS" "$DOCS/results"

DATA_FLAGS=(--dataset cifar10-jpeg --data-root "$DATA" --device "$DEVICE" --channels-last)
# Cohen et al.'s optimiser (SGD, momentum 0.9, lr 0.1, weight decay 1e-4, batch 256, crops and
# flips), with a cosine schedule over 30 epochs instead of their 90 with steps.
NOISE_TRAINING=(--sigma "$SIGMA" --preset cohen --epochs "$NOISE_EPOCHS" --schedule cosine)
SIMCLR=$RUNS/simclr-r20.pt
declare -A OUT=(
    [baseline]=$RUNS/cohen-r20-sigma$SIGMA_NAME.pt
    [rush]=$RUNS/rush-r20-sigma$SIGMA_NAME.pt
    [consistency]=$RUNS/rush-consistency-r20-sigma$SIGMA_NAME.pt
)
declare -A SHIPPED=(
    [baseline]=cifar10-cohen-sigma$SIGMA_NAME
    [rush]=cifar10-rush-sigma$SIGMA_NAME
    [consistency]=cifar10-rush-consistency-sigma$SIGMA_NAME
)

trained() {  # a training step is done once its checkpoint exists (an unfinished one has <out>.partial)
    [ -f "$1" ] || { echo "$1 is not trained yet: run its step first" >&2; return 1; }
}
declare -A LABEL=([baseline]="ResNet-20 baseline" [rush]="ResNet-20 RUSH"
                  [consistency]="ResNet-20 RUSH + consistency")
model_file() { echo "$MODELS/${SHIPPED[$1]}.pt"; }
done_or_shipped() { [ -f "${OUT[$1]}" ] || [ -f "$(model_file "$1")" ]; }
shipped() {  # the models that the ship step has copied so far
    for model in baseline rush consistency; do
        [ -f "$(model_file "$model")" ] && echo "$model"
    done
    return 0
}
EVAL=(--dataset cifar10-jpeg --data-root "$DATA" --sigma "$SIGMA" --device "$DEVICE" --quiet)

for step in $STEPS; do
    echo "== $step"
    case $step in
    simclr)
        [ -f "$SIMCLR" ] || bounded "$BIN/encoders-pretrain" "${DATA_FLAGS[@]}" \
            --arch cifar_resnet20 --epochs "$SIMCLR_EPOCHS" --batch 256 --out "$SIMCLR" ;;
    baseline)
        done_or_shipped baseline || bounded "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --arch cifar_resnet20 "${NOISE_TRAINING[@]}" --out "${OUT[baseline]}" ;;
    rush)
        trained "$SIMCLR"
        done_or_shipped rush || bounded "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --encoder "$SIMCLR" "${NOISE_TRAINING[@]}" --out "${OUT[rush]}" ;;
    consistency)
        trained "$SIMCLR"
        done_or_shipped consistency || bounded "$BIN/encoders-finetune" "${DATA_FLAGS[@]}" \
            --encoder "$SIMCLR" "${NOISE_TRAINING[@]}" --recipe consistency \
            --out "${OUT[consistency]}" ;;
    ship)
        for model in baseline rush consistency; do
            shipped=$(model_file "$model")
            if [ -f "${OUT[$model]}" ] && [ ! -f "$shipped" ]; then
                "$BIN/python" -c "import sys; from encoders.checkpoint import half_precision_copy; \
half_precision_copy(sys.argv[1], sys.argv[2])" "${OUT[$model]}" "$shipped"
                echo "shipped $shipped"
            fi
        done ;;
    evaluate)
        probe=()  # the encoder's linear probe once pre-training is done
        [ -f "$SIMCLR" ] && probe=(--encoder "$SIMCLR")
        "$BIN/python" scripts/evaluate_classifiers.py --dataset cifar10-jpeg --data-root "$DATA" \
            --sigma "$SIGMA" "${probe[@]}" --device "$DEVICE" \
            --out "$DOCS/results/accuracy_sigma$SIGMA_NAME.md" \
            --classifiers $(for model in $(shipped); do model_file "$model"; done) ;;
    certify)
        for model in $(shipped); do
            bounded "$BIN/certify" --model "$(model_file "$model")" "${EVAL[@]}" --skip "$SKIP" \
                --n "$N" --out "$DOCS/results/${SHIPPED[$model]}_n$N.tsv"
        done
        if [ "$N_LARGE" != 0 ] && [ -f "$(model_file rush)" ]; then
            bounded "$BIN/certify" --model "$(model_file rush)" "${EVAL[@]}" --skip "$SKIP_LARGE" \
                --n "$N_LARGE" --out "$DOCS/results/${SHIPPED[rush]}_n$N_LARGE.tsv"
        fi ;;
    figure)
        files=() labels=()
        for model in $(shipped); do
            files+=("$DOCS/results/${SHIPPED[$model]}_n$N.tsv")
            labels+=("${LABEL[$model]} (JPEG copy, $((10000 / SKIP)) images, n = $N)")
        done
        large=$DOCS/results/${SHIPPED[rush]}_n$N_LARGE.tsv  # what the larger n adds
        if [ -f "$large" ]; then
            files+=("$large")
            labels+=("${LABEL[rush]} (JPEG copy, $((10000 / SKIP_LARGE)) images, n = $N_LARGE)")
        fi
        published=tests/data/cohen2019/cifar10_resnet110_noise${SIGMA_NAME}_sigma$SIGMA_NAME.tsv
        if [ -f "$published" ]; then  # Cohen et al.'s row beside ours, at the same sigma only
            files+=("$published")
            labels+=("Cohen et al. ResNet-110 (original, 500 images, n = 100,000, alpha = 0.01)")
        fi
        "$BIN/certify-plot" "${files[@]}" --labels "${labels[@]}" \
            --radii "${RADII[@]}" --paired --title "CIFAR-10, sigma = $SIGMA" \
            --out "$DOCS/certified_accuracy_sigma$SIGMA_NAME.png" > "$DOCS/results/certified_sigma$SIGMA_NAME.md"
        cat "$DOCS/results/certified_sigma$SIGMA_NAME.md" ;;
    attack)
        for model in $(shipped); do
            bounded "$BIN/certify-attack" --model "$(model_file "$model")" "${EVAL[@]}" \
                --skip "$SKIP" --n "$ATTACK_N" --steps 20 --eot-samples 32 --linf-eps 8/255 \
                --l2-eps 0.25 0.5 1.0 \
                --out "$DOCS/results/${SHIPPED[$model]}_attack.tsv"
        done ;;
    claim)
        tables=()
        for model in $(shipped); do
            tables+=(--model "$model" "$DOCS/results/${SHIPPED[$model]}_attack.tsv"
                     "$DOCS/results/${SHIPPED[$model]}_n$N.tsv")
        done
        "$BIN/python" scripts/rush_claim_table.py "${tables[@]}" \
            --out "$DOCS/results/rush_claim_sigma$SIGMA_NAME.md" ;;
    audit)
        for model in $(shipped); do
            bounded "$BIN/certify-audit" --model "$(model_file "$model")" "${EVAL[@]}" \
                --skip "$SKIP" --n "$N" --predict-n "$ATTACK_N" \
                --certificates "$DOCS/results/${SHIPPED[$model]}_n$N.tsv" \
                --out "$DOCS/results/${SHIPPED[$model]}_audit.tsv"
        done ;;
    ladder)
        trained "$(model_file rush)"
        starts benchmarks/attack_ladder.py || continue
        bounded "$BIN/python" benchmarks/attack_ladder.py --model "$(model_file rush)" \
            --dataset cifar10-jpeg --data-root "$DATA" --sigma "$SIGMA" --skip "$LADDER_SKIP" \
            --eps 8/255 "${LADDER_GRID[@]}" --n "$ATTACK_N" --attack-batch "$LADDER_BATCH" \
            --channels-last --device "$DEVICE" --out-dir "$DOCS/results/ladder_sigma$SIGMA_NAME" ;;
    adaptive)
        for model in $(shipped); do
            [ ! -f "$DOCS/results/${SHIPPED[$model]}_adaptive.md" ] || continue
            starts benchmarks/adaptive.py || break
            "$BIN/python" benchmarks/adaptive.py --model "$(model_file "$model")" \
                --dataset cifar10-jpeg --data-root "$DATA" --skip "$SKIP" --sigma "$SIGMA" --n "$N" \
                --radii "${TARGET_RADII[@]}" --curve-radii "${RADII[@]}" --simulate \
                --linear-images 0 --digits-skip 0 \
                --certificates "$DOCS/results/${SHIPPED[$model]}_n$N.tsv" --device "$DEVICE" \
                > "$DOCS/results/${SHIPPED[$model]}_adaptive.md.partial"
            mv "$DOCS/results/${SHIPPED[$model]}_adaptive.md.partial" \
                "$DOCS/results/${SHIPPED[$model]}_adaptive.md"
        done ;;
    pack)
        mkdir -p "$DOCS/training"
        for file in "$SIMCLR.partial" "${OUT[@]/%/.partial}"; do
            packed=$DOCS/training/$(basename "$file")
            if [ -f "$file" ]; then
                "$BIN/python" -c "import sys; from encoders.checkpoint import portable_copy; \
portable_copy(sys.argv[1], sys.argv[2])" "$file" "$packed"
                echo "packed $file"
            elif [ -f "${file%.partial}" ] && [ -f "$packed" ]; then
                rm -v "$packed"  # the run has finished since it was packed
            fi
        done
        if [ -f "$SIMCLR" ]; then cp -v "$SIMCLR" "$DOCS/training/"; fi ;;
    unpack)
        for file in "$DOCS"/training/*.partial "$DOCS/training/$(basename "$SIMCLR")"; do
            [ -f "$file" ] || continue
            target=$RUNS/$(basename "$file")  # unless RUNS has the run, finished or not
            [ -f "$target" ] || [ -f "${target%.partial}" ] || cp -v "$file" "$RUNS/"
        done ;;
    *)
        echo "unknown step $step" >&2
        exit 2 ;;
    esac
done
