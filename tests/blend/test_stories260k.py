"""The real stories260K Llama (../shared/data/stories260K): blend two perturbed copies, save, reload.

Skipped when the shared data folder is absent (a newcomer's checkout has none)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.losses import CausalLM

from .hf_helpers import logits, perturbed, transformers


def _stories_dir():
    from spsa_mix.data.images import default_data_roots

    return next((r / "stories260K" for r in default_data_roots() if (r / "stories260K" / "config.json").is_file()),
                None)


def test_stories260k_blend_saves_and_reloads_with_equal_logits(tmp_path):
    src = _stories_dir()
    if src is None:
        pytest.skip("stories260K not found in ../shared/data (or $SPSA_MIX_DATA)")
    base_dir = tmp_path / "stories260K"
    shutil.copytree(src, base_dir)  # the shared folder is read-only
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()
    experts = []
    for i in range(2):
        d = tmp_path / f"expert{i}"
        perturbed(base, seed=i, scale=0.02).save_pretrained(d)
        experts.append(d)
    tok = transformers.AutoTokenizer.from_pretrained(base_dir)
    tok.pad_token = tok.eos_token
    enc = tok(["Once upon a time", "The little girl"], return_tensors="pt", padding=True)
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    obj = BlendedObjective.from_pretrained(experts, base=base_dir, space="task-vectors", data=batch, device="cpu")
    assert obj.num_blended == base.num_parameters() == 260_032  # the tied embedding stacked once
    alpha = np.array([0.35, 0.65])
    out = obj.save_pretrained(alpha, tmp_path / "merged")
    assert (tmp_path / "merged" / "tokenizer.model").is_file()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(logits(loaded, batch), logits(obj.blended_model(alpha), batch), rtol=0, atol=0)
    target = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert float(CausalLM()(logits(loaded, batch), target)) == pytest.approx(obj(alpha), rel=1e-6)
    assert transformers.AutoTokenizer.from_pretrained(out)("Once upon a time")["input_ids"] == tok("Once upon a time")["input_ids"]
