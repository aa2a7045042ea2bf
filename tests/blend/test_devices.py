"""Device resolution."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.blend.devices import check_float_dtype, resolve_device


def test_default_is_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")


def test_unavailable_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda:1' is not available: torch.cuda.is_available\(\) is False"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device='cuda:3' is not available: 1 CUDA device\(s\) are visible"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu' or 'cuda', but got 5.5"):
        resolve_device(5.5)  # type: ignore[arg-type]


def test_float_dtype():
    assert check_float_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="dtype must be a floating-point torch dtype .* but got 'float32'"):
        check_float_dtype("float32")  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["meta", torch.device("meta")])
def test_meta_is_refused_it_holds_no_data(device):
    with pytest.raises(ValueError, match=r"device=.*meta.* holds no data: nothing can be scored there; pass 'cpu', "
                                         r"'cuda' or 'auto'"):
        resolve_device(device)


def test_a_dtype_the_device_cannot_run_is_named_with_the_device(monkeypatch):
    import torch

    from spsa_mix.blend.devices import check_device_dtype

    cpu = torch.device("cpu")
    assert check_device_dtype(cpu, torch.bfloat16) == torch.bfloat16
    matmul = torch.Tensor.__matmul__

    def no_fp16(a, b):
        if a.dtype == torch.float16:
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")
        return matmul(a, b)

    monkeypatch.setattr(torch.Tensor, "__matmul__", no_fp16)
    with pytest.raises(ValueError, match=r"dtype=torch.float16 cannot run on device='cpu' \(RuntimeError: "
                                         r"\"addmm_impl_cpu_\" not implemented for 'Half'\)"):
        check_device_dtype(cpu, torch.float16)
