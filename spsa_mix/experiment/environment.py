"""What the numbers of a run depend on beyond its code and configuration.

The same code and configuration give bit for bit the same results only where the
``environment`` of the results JSON agrees on :data:`BIT_EXACT_KEYS`:

* ``python``, ``numpy`` and ``torch`` (whose version names the build, ``2.14.1+cu130``),
  ``nevergrad`` and ``optuna`` (their samplers; ``None`` when not installed);
* the CPU: ``cpu`` (model name) and ``cpu_simd`` (its vector instruction sets). PyTorch
  (``torch_cpu_capability``: ``AVX2``, ``AVX512``, ...), MKL and oneDNN pick their kernels
  from these at run time, and kernels of different widths add in different orders;
* ``numerics_env``: the environment variables that override those picks or the thread
  counts (:data:`NUMERICS_ENV_VARS`), those that are set;
* ``torch_threads`` (a reduction split over threads adds in another order) and ``device``
  (and ``gpu`` on CUDA).

A difference in any of them changes the rounding of some operations; over 40 epochs of
expert training and 5 of fine-tuning, that moves a few test images across a decision
boundary. ``tests/experiment/test_reproduce.py`` measures how far.

>>> env = bit_exact_environment()
>>> sorted(env) == sorted(set(BIT_EXACT_KEYS) - {"python", "torch", "torch_threads", "device"})
True
>>> bits_comparable({"python": "3.11.7"}, {"python": "3.11.7"})  # the others unknown
False
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["BIT_EXACT_KEYS", "NUMERICS_ENV_VARS", "bit_exact_environment", "bits_comparable"]

BIT_EXACT_KEYS = ("python", "numpy", "torch", "nevergrad", "optuna", "torch_cpu_capability", "cpu", "cpu_simd",
                  "numerics_env", "torch_threads", "device")
NUMERICS_ENV_VARS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                     "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS",
                     "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
SIMD_PREFIXES = ("sse4", "avx", "fma", "amx", "asimd", "sve")  # x86 "flags", Arm "Features"


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def bit_exact_environment() -> dict[str, Any]:
    """The entries of :data:`BIT_EXACT_KEYS` besides ``python``, ``torch``, threads and device.

    ``cpu`` is /proc/cpuinfo's model name (else ``platform.processor()``); ``cpu_simd`` the
    sorted SIMD flags of the first processor, ``None`` where /proc/cpuinfo is missing.
    """
    import numpy as np
    import torch

    info = _cpuinfo()
    flags = info.get("flags", info.get("Features"))
    return {
        "numpy": np.__version__,
        "nevergrad": _version("nevergrad"),
        "optuna": _version("optuna"),
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_simd": None if flags is None else sorted(f for f in flags.split() if f.startswith(SIMD_PREFIXES)),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numerics_env": {k: os.environ[k] for k in NUMERICS_ENV_VARS if k in os.environ},
    }


def bits_comparable(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether two ``environment`` records agree on everything bit-exactness depends on.

    ``False`` when either lacks one of :data:`BIT_EXACT_KEYS`, or the CPU's instruction
    sets are unknown (``cpu_simd`` is ``None``): an environment not known in full cannot
    promise bits.
    """
    if any(k not in recorded or k not in current for k in BIT_EXACT_KEYS) or recorded["cpu_simd"] is None:
        return False
    return all(recorded[k] == current[k] for k in BIT_EXACT_KEYS) and recorded.get("gpu") == current.get("gpu")
