"""Where the blend lives: the default device, and a clear error for an unavailable one.

Example
-------
>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "check_float_dtype", "check_device_dtype"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device``, checked; ``None`` or ``"auto"`` means CUDA when available, else the CPU.

    Raises
    ------
    ValueError
        If ``device`` does not parse, names CUDA (or MPS) on a machine without it or a
        CUDA index beyond the visible GPUs, or is ``"meta"`` (shapes without data).

    Examples
    --------
    >>> resolve_device(None).type in ("cpu", "cuda"), resolve_device("auto") == resolve_device(None)
    (True, True)
    >>> resolve_device("tpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: device must be a torch device such as 'cpu' or 'cuda', but got 'tpu' ...
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', but got {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} is not available: torch.cuda.is_available() is False on this machine "
                "(pass device='cpu', or 'auto' for CUDA when available)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} is not available: {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif dev.type == "meta":  # torch accepts it, but its tensors have shapes and no values
        raise ValueError(f"device={device!r} holds no data: nothing can be scored there; pass 'cpu', 'cuda' or 'auto'")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} is not available: torch.backends.mps.is_available() is False")
    return dev


def check_float_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is a floating-point torch dtype.

    >>> check_float_dtype(torch.int64)
    Traceback (most recent call last):
    ...
    ValueError: dtype must be a floating-point torch dtype such as torch.float32, but got torch.int64
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype such as torch.float32, but got {dtype!r}")
    return dtype


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if ``device`` can run a matrix product and a softmax in it.

    Checked with a 2x2 product, before any expert is read; an unsupported pair (e.g. fp16
    on a CPU or GPU without the kernels) is a ``ValueError`` that names both.

    >>> check_device_dtype(torch.device("cpu"), torch.float32)
    torch.float32
    """
    try:
        a = torch.ones(2, 2, device=device, dtype=dtype)
        torch.softmax(a @ a, dim=-1).sum().item()
    except (RuntimeError, TypeError, NotImplementedError) as e:
        raise ValueError(f"dtype={dtype} cannot run on device={str(device)!r} ({type(e).__name__}: {e}); "
                         "pass dtype=torch.float32 (or a dtype this device supports)") from None
    return dtype
