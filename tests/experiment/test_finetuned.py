"""Experts fine-tuned from a pretrained model: what is written, the cache, and blending them
through the public API (tiny models built from configs, no files needed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from spsa_mix.blend import BlendedObjective
from spsa_mix.experiment.finetuned import FinetuneSpec, finetune_expert, finetune_key, tensors_digest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def lm_examples(seed: int, n: int = 16, length: int = 8, vocab: int = 32):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=gen)
    ids[:, 1::2] = ids[:, ::2] % 5 + 3  # a learnable pattern: every odd token follows the even one
    mask = torch.ones_like(ids)
    mask[: n // 4, -2:] = 0
    ids = ids.masked_fill(mask == 0, 2)
    return {"input_ids": ids, "attention_mask": mask}, ids.masked_fill(mask == 0, -100)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                                   tie_word_embeddings=True, pad_token_id=2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    (path / "tokenizer_config.json").write_text("{}")  # stands for the tokenizer files copied beside a full expert
    return path


def test_full_and_lora_experts_are_loadable_cached_and_blendable(base_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    cache = tmp_path / "cache"
    full = [finetune_expert(base_dir, lm_examples(s), spec=FinetuneSpec(epochs=2, batch_size=4, lr=1e-2),
                            cache_dir=cache, name=f"d{s}") for s in range(2)]
    lora = [finetune_expert(base_dir, lm_examples(s), spec=FinetuneSpec(kind="lora", epochs=2, batch_size=4,
                                                                        lr=1e-2, lora_r=2, lora_alpha=4,
                                                                        lora_targets=("q_proj", "v_proj")),
                            cache_dir=cache, name=f"d{s}") for s in range(2)]
    assert not any(e.cached for e in full + lora)
    for e in full:
        assert (e.path / "config.json").is_file() and (e.path / "tokenizer_config.json").is_file()
        assert e.meta["train_loss"][1] < e.meta["train_loss"][0]
        meta = json.loads((cache / f"{e.key}.json").read_text())
        assert meta["spec"]["lr"] == 1e-2 and meta["examples"] == 16 and meta["name"] in ("d0", "d1")
    model = transformers.AutoModelForCausalLM.from_pretrained(full[0].path)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tied embedding stays tied
    for e in lora:
        assert (e.path / "adapter_config.json").is_file()
        cfg = json.loads((e.path / "adapter_config.json").read_text())
        assert cfg["r"] == 2 and cfg["lora_alpha"] == 4 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]
        peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base_dir), e.path)
    # the same inputs: every expert from the cache, none trained again
    again = finetune_expert(base_dir, lm_examples(1), spec=FinetuneSpec(epochs=2, batch_size=4, lr=1e-2),
                            cache_dir=cache, name="d1")
    assert again.cached and again.path == full[1].path and again.meta == full[1].meta

    inputs, labels = lm_examples(5)
    batch = {**inputs, "labels": labels}
    for space, experts in (("convex", full), ("task-vectors", full), ("lora", lora)):
        kw = {"base": base_dir} if space != "convex" else {}
        obj = BlendedObjective.from_pretrained([e.path for e in experts], space=space, data=batch, device="cpu", **kw)
        losses = obj(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
        assert losses.shape == (3,) and np.all(np.isfinite(losses))
    # expert 0 alone is the fine-tuned model itself
    obj = BlendedObjective.from_pretrained([e.path for e in full], data=batch, device="cpu")
    with torch.inference_mode():
        out = transformers.AutoModelForCausalLM.from_pretrained(full[0].path)(**inputs).logits
    from spsa_mix.blend.losses import CausalLM

    assert obj(np.array([1.0, 0.0])) == pytest.approx(float(CausalLM()(out, labels)), rel=1e-5)


def test_the_key_follows_everything_that_determines_the_expert(base_dir, tmp_path):
    spec = FinetuneSpec(epochs=1, batch_size=4)
    data = lm_examples(0)
    key = finetune_key(spec, "base", tensors_digest(data))
    assert key == finetune_key(FinetuneSpec(epochs=1, batch_size=4), "base", tensors_digest(lm_examples(0)))
    assert key != finetune_key(FinetuneSpec(epochs=1, batch_size=4, seed=1), "base", tensors_digest(data))
    assert key != finetune_key(spec, "other base", tensors_digest(data))
    assert key != finetune_key(spec, "base", tensors_digest(lm_examples(1)))
    assert key != finetune_key(spec, "base", tensors_digest(data), name="other")
    a = finetune_expert(base_dir, data, spec=spec, cache_dir=tmp_path)
    b = finetune_expert(base_dir, data, spec=FinetuneSpec(epochs=1, batch_size=4, lr=2e-3), cache_dir=tmp_path)
    assert a.key != b.key and not b.cached


def test_a_folder_without_its_json_is_trained_again(base_dir, tmp_path):
    data, spec = lm_examples(0), FinetuneSpec(epochs=1, batch_size=8)
    first = finetune_expert(base_dir, data, spec=spec, cache_dir=tmp_path)
    (tmp_path / f"{first.key}.json").unlink()  # an interrupted run: the folder is there, its JSON not
    again = finetune_expert(base_dir, data, spec=spec, cache_dir=tmp_path)
    assert not again.cached and (tmp_path / f"{first.key}.json").is_file()


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _pretrained() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _Net()


def test_module_experts_are_state_dict_files_blended_with_the_module_api(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 1, 4, 4, generator=gen), torch.arange(24) % 2
    experts = [finetune_expert(_pretrained, (x + s, y), spec=FinetuneSpec(epochs=1, batch_size=8), cache_dir=tmp_path)
               for s in range(2)]
    assert [e.path.name for e in experts] == ["model.safetensors"] * 2
    from safetensors.torch import load_file

    state = load_file(str(experts[0].path))
    assert set(state) == set(_pretrained().state_dict())
    assert int(state["bn.num_batches_tracked"]) == 3  # trained in train mode: BatchNorm statistics moved
    assert not torch.equal(state["conv.weight"], _pretrained().conv.weight)
    base = tmp_path / "base.safetensors"
    from safetensors.torch import save_file

    save_file(dict(_pretrained().state_dict()), str(base))
    obj = BlendedObjective(_pretrained(), [e.path for e in experts], base=base, space="task-vectors",
                           data=(x, y), device="cpu", simplex_atol=None)
    net = _pretrained().eval()
    with torch.inference_mode():
        expected = float(torch.nn.functional.cross_entropy(net(x), y))
    assert obj(np.zeros(2)) == pytest.approx(expected, rel=1e-6)  # no task vector: the base


def test_errors_name_what_is_wrong(base_dir, tmp_path):
    data = lm_examples(0)
    with pytest.raises(ValueError, match="spec.kind='lora' needs a Hugging Face base directory"):
        finetune_expert(_pretrained, (torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)),
                        spec=FinetuneSpec(kind="lora"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="is not a Hugging Face model directory"):
        finetune_expert(tmp_path, data, spec=FinetuneSpec(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="data must be a pair \\(inputs, targets\\)"):
        finetune_expert(base_dir, [data], spec=FinetuneSpec(), cache_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every input must be a tensor with one row per target \\(16\\)"):
        finetune_expert(base_dir, ({"input_ids": data[0]["input_ids"][:3]}, data[1]), spec=FinetuneSpec(),
                        cache_dir=tmp_path)
    with pytest.raises(ValueError, match="spec must be a FinetuneSpec"):
        finetune_expert(base_dir, data, spec={"lr": 1}, cache_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base\\(\\) must return an nn.Module"):
        finetune_expert(lambda: 3, data, spec=FinetuneSpec(), cache_dir=tmp_path)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="kind must be 'full' or 'lora', but got 'dora'"):
        FinetuneSpec(kind="dora")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr must be positive, but got 0"):
        FinetuneSpec(lr=0)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        FinetuneSpec(epochs=0)
