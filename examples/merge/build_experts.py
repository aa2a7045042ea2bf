"""Build the experts and target data that the configs beside this script merge.

Run: ``python examples/merge/build_experts.py lm|lora|vision [--root DIR]`` (default root:
``examples/merge/build/``, which the configs name), then ``spsa-mix merge
examples/merge/<kind>.yaml``. Everything comes from data the package ships or generates
(scikit-learn's digits, the generated ``text-domains``): see :mod:`spsa_mix.merge.demo` for
what each expert is trained on and what the target is. Seconds on a CPU; what exists is kept.
"""

import argparse
from pathlib import Path

from spsa_mix.merge.demo import DEMOS, build_demo


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=DEMOS)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent / "build")
    args = parser.parse_args()
    paths = build_demo(args.kind, args.root / args.kind)
    for key, value in paths.items():
        print(f"{key}={value}")
    return paths


if __name__ == "__main__":
    main()
