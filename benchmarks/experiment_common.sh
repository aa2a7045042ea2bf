# Sourced by the benchmark scripts that run `spsa-mix experiment` (glue_fashion_mnist.sh,
# glue_cifar10.sh), from the repository root: the interpreter, the results folder, dry runs.
#
# The interpreter: $PYTHON if set, else .venv/bin/python of the repository if it exists, else
# python3; commands run as `$PYTHON -m spsa_mix`, so no virtual environment needs to be
# activated. DRY_RUN=1 makes `run` print each command instead of running it.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT=benchmarks/results

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# Exit 2 with one line, before any work, when $PYTHON cannot import the package ($1: the script's name).
require_spsa_mix() {
  if [[ -z "${DRY_RUN:-}" ]] && ! "$PYTHON" -c 'import spsa_mix' 2>/dev/null; then
    echo "$1: $PYTHON cannot import spsa_mix: install the package (pip install -e '.[all]') or set PYTHON" >&2
    exit 2
  fi
}
