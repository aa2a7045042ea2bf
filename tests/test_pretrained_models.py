"""The pretrained CIFAR ResNets of ../shared/data read into ResNet20 (a file made here; the real
ones when present)."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.models import ResNet20, load_cifar_resnet


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # convolutions of a few images: faster on one thread, above all on a loaded machine
    yield
    torch.set_num_threads(before)


def _akamaster_file(path, blocks: int, seed: int = 0):
    torch.manual_seed(seed)
    net = ResNet20(num_classes=10, in_channels=3, blocks_per_stage=blocks)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {"module." + (("linear." + k[3:]) if k.startswith("fc.") else k): v
             for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"best_prec1": 91.0, "state_dict": state}, path)
    return net.eval()


@pytest.mark.parametrize("blocks", [3, 9])  # ResNet-20 and ResNet-56
def test_akamaster_files_load_with_their_depth_and_give_the_same_outputs(tmp_path, blocks):
    ref = _akamaster_file(tmp_path / "r.th", blocks)
    net = load_cifar_resnet(tmp_path / "r.th")
    assert len(net.layer1) == blocks and not net.training
    assert int(net.bn1.num_batches_tracked) == 0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read a CIFAR ResNet checkpoint from"):
        load_cifar_resnet(tmp_path / "missing.th")
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.th")
    with pytest.raises(ValueError, match="does not hold a CIFAR ResNet state dict"):
        load_cifar_resnet(tmp_path / "other.th")


@pytest.mark.parametrize("name,blocks", [("resnet20-12fca82f.th", 3), ("resnet56-4bfd9763.th", 9)])
def test_the_real_resnets_score_as_their_readme_says_when_present(name, blocks):
    from spsa_mix.data.real import CIFAR10_ZIP, IMAGENET_MEAN, IMAGENET_STD, find_shared, read_cifar10_zip

    ckpt, zip_path = find_shared(f"resnet_cifar10/{name}"), find_shared(CIFAR10_ZIP)
    if ckpt is None or zip_path is None:
        pytest.skip("../shared/data (resnet_cifar10, cifar10-jpeg.zip) is not present")
    net = load_cifar_resnet(ckpt)
    assert len(net.layer1) == blocks
    x, y = read_cifar10_zip(zip_path, "test", per_class=20)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        acc = (net((x.float() / 255 - mean) / std).argmax(1) == y).float().mean()
    assert float(acc) > 0.7  # about 81 % on the JPEG images for ResNet-20 (../shared/data/README.md)
