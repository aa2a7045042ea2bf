#!/usr/bin/env bash
# GLUE's protocol on CIFAR-10 (the paper's first dataset), cut to what this project's 2-core CPU
# finishes; results in benchmarks/results/glue_cifar10_*.
#
#   benchmarks/glue_cifar10.sh small-cnn   # the small CNN, 3 seeds (~20 min on 2 cores)
#   benchmarks/glue_cifar10.sh resnet20    # ResNet-20, 1 seed (~30 min on 2 cores)
#
# The protocol (GLUE 5): K=10 experts on Dirichlet(0.5) splits of the training set, an IID
# target set, every way to set alpha (alpha learned on cross-entropy), fine-tuning, 3 seeds.
# What is cut, for the CPU: 1000 images per expert (GLUE: 2000), 3000 target images (10,000),
# 20 expert epochs (40), a budget of 400 evaluations (1000), 3 fine-tuning epochs; ResNet-20:
# 500 images per expert, 1000 target images, 10 expert epochs, 200 evaluations, 2 fine-tuning
# epochs and one seed. The test set is CIFAR-10's 10,000 test images.
#
# Data: cifar10-jpeg.zip under $SPSA_MIX_DATA or ../shared/data (see its README), decoded once
# and cached as .npz. The interpreter: $PYTHON, else .venv/bin/python, else python3.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_common.sh
COMMON=(--dataset cifar10-jpeg --k 10 --dirichlet-alpha 0.5 --holdout-size 500 --target-concentration iid
        --alpha-loss task --device cpu --threads 1 --no-progress)

case "${1:-}" in
  small-cnn|resnet20) ;;
  *)
    echo "usage: $0 small-cnn|resnet20" >&2
    exit 2
    ;;
esac
require_spsa_mix "$0"

case "$1" in
  small-cnn)
    run "$PYTHON" -m spsa_mix experiment "${COMMON[@]}" --arch small-cnn --per-expert 1000 --target-size 3000 \
      --expert-epochs 20 --budget 400 --finetune-epochs 3 --seeds 3 \
      --output $OUT/glue_cifar10_small_cnn_cpu.json --markdown $OUT/glue_cifar10_small_cnn_cpu.md \
      --plot $OUT/glue_cifar10_small_cnn_cpu.png
    ;;
  resnet20)
    run "$PYTHON" -m spsa_mix experiment "${COMMON[@]}" --arch resnet20 --per-expert 500 --target-size 1000 \
      --expert-epochs 10 --budget 200 --finetune-epochs 2 --seeds 1 \
      --output $OUT/glue_cifar10_resnet20_cpu.json --markdown $OUT/glue_cifar10_resnet20_cpu.md \
      --plot $OUT/glue_cifar10_resnet20_cpu.png
    ;;
esac
