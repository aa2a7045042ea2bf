#!/usr/bin/env bash
# Reproduce the recorded GLUE runs on Fashion-MNIST (results in benchmarks/results/glue_*).
#
#   benchmarks/glue_fashion_mnist.sh cpu        # small CNN on a CPU, the same settings as the GPU run (~1 h, 2 cores)
#   benchmarks/glue_fashion_mnist.sh gpu        # small CNN and ResNet-20 on one GPU, GLUE's sizes (~5 and ~8 min on an H100)
#   benchmarks/glue_fashion_mnist.sh digits     # the default `spsa-mix experiment` (built-in digits), timed
#
# The interpreter: $PYTHON if set, else .venv/bin/python of the repository if it exists, else
# python3; the commands run as `$PYTHON -m spsa_mix`, so no virtual environment needs to be
# activated. DRY_RUN=1 prints the commands instead of running them.
#
# Data: Fashion-MNIST's four idx files under $SPSA_MIX_DATA/FashionMNIST/raw/ (or ../shared/data
# beside the repository, found by default). Trained experts are cached in $SPSA_MIX_CACHE
# (default ~/.cache/spsa_mix), so a second run reuses them. A rerun into the same results file
# reuses its finished runs with the same settings and keeps the others under previous_runs:
# delete the file first to record afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_common.sh
# GLUE 5's protocol: an IID target and alpha learned on cross-entropy (the built-in default run differs).
COMMON=(--dataset fashion-mnist --k 10 --per-expert 2000 --holdout-size 1000 --budget 1000 --seeds 3 --no-progress
        --target-concentration iid --alpha-loss task)

case "${1:-cpu}" in
  cpu|gpu|digits) ;;
  *)
    echo "usage: $0 cpu|gpu|digits" >&2
    exit 2
    ;;
esac
require_spsa_mix "$0"

case "${1:-cpu}" in
  cpu)
    # The GPU run's settings (GLUE 5's sizes), on the CPU, one torch thread.
    run "$PYTHON" -m spsa_mix experiment "${COMMON[@]}" --arch small-cnn --target-size 10000 --expert-epochs 40 \
      --finetune-epochs 5 --device cpu --threads 1 --output $OUT/glue_fashion_mnist_small_cnn_cpu.json \
      --markdown $OUT/glue_fashion_mnist_small_cnn_cpu.md --plot $OUT/glue_fashion_mnist_small_cnn_cpu.png
    ;;
  gpu)
    # GLUE 5's sizes; ResNet-20 with 20 expert epochs and 3 fine-tuning epochs to fit a 10-minute slot.
    run "$PYTHON" -m spsa_mix experiment "${COMMON[@]}" --arch small-cnn --target-size 10000 --expert-epochs 40 \
      --finetune-epochs 5 --device cuda --output $OUT/glue_fashion_mnist_small_cnn_h100.json \
      --plot $OUT/glue_fashion_mnist_small_cnn_h100.png
    run "$PYTHON" -m spsa_mix experiment "${COMMON[@]}" --arch resnet20 --target-size 10000 --expert-epochs 20 \
      --finetune-epochs 3 --device cuda --output $OUT/glue_fashion_mnist_resnet20_h100.json \
      --plot $OUT/glue_fashion_mnist_resnet20_h100.png
    ;;
  digits)
    run /usr/bin/time -p "$PYTHON" -m spsa_mix experiment --no-progress --output $OUT/glue_digits_small_cnn.json \
      --markdown $OUT/glue_digits_small_cnn.md --plot $OUT/glue_digits_small_cnn.png
    ;;
esac
