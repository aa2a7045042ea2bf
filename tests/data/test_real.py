"""The real data's readers and the generated text domains; the shared files only when present."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
import torch

from spsa_mix.data.real import (
    CIFAR10_CLASSES,
    CIFAR10_ZIP,
    arithmetic_texts,
    as_batches,
    causal_lm_examples,
    find_shared,
    read_cifar10_zip,
    read_sst2,
    sample_texts,
)


def _jpeg(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def cifar_zip(tmp_path):
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            for c, cls in enumerate(CIFAR10_CLASSES):
                for i in range(3):
                    z.writestr(f"cifar10-jpeg/{split}/{cls}/{i:04d}.jpg", _jpeg(20 * c + i))
    return path


def test_cifar_zip_reads_classes_in_order_from_the_offset(cifar_zip):
    x, y = read_cifar10_zip(cifar_zip, "train", per_class=2, offset=1)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [c for c in range(10) for _ in range(2)]
    # image i of class c is flat 20 c + i (JPEG at quality 95 keeps a flat image within 1)
    values = x.float().mean(dim=(1, 2, 3))
    expected = torch.tensor([20.0 * c + i for c in range(10) for i in (1, 2)])
    assert float((values - expected).abs().max()) <= 1.0


def test_cifar_zip_errors(cifar_zip, tmp_path):
    with pytest.raises(ValueError, match="class 'airplane' of split 'test' has 3 images, fewer than offset 2 "
                                         "\\+ per_class 2"):
        read_cifar10_zip(cifar_zip, "test", per_class=2, offset=2)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', but got 'val'"):
        read_cifar10_zip(cifar_zip, "val", per_class=1)
    with pytest.raises(ValueError, match="no such file"):
        read_cifar10_zip(tmp_path / "none.zip", per_class=1)
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        read_cifar10_zip(cifar_zip, per_class=0)


def test_read_sst2_strips_and_numbers(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's good \t1\nbad .\t0\n")
    assert read_sst2(tmp_path, "dev") == (["it 's good", "bad ."], [1, 0])
    with pytest.raises(ValueError, match="split must be 'train' or 'dev'"):
        read_sst2(tmp_path, "test")


def test_arithmetic_texts_are_seeded_and_their_sums_are_right():
    a, b = arithmetic_texts(200, seed=3), arithmetic_texts(200, seed=3)
    assert a == b and a != arithmetic_texts(200, seed=4)
    for text in a:
        nums = [int(v) for v in re.findall(r"\d+", text)]
        assert len(nums) == 3
        if " lost " in text:
            assert nums[0] - nums[1] == nums[2] >= 0
        else:
            assert nums[0] + nums[1] == nums[2]


class _CharTokenizer:
    """A tokenizer with one id per character (ids 3..), bos 1, eos 2, no padding token."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, None

    def __call__(self, texts, truncation=True, max_length=None, add_special_tokens=True):
        single = isinstance(texts, str)
        rows = []
        for t in [texts] if single else texts:
            ids = ([1] if add_special_tokens else []) + [3 + (ord(ch) % 60) for ch in t]
            rows.append(ids[:max_length] if truncation and max_length else ids)
        return {"input_ids": rows[0] if single else rows}

    def batch_decode(self, rows, skip_special_tokens=True):
        return ["".join(chr(97 + (int(i) - 3) % 26) for i in r if int(i) > 2) for r in rows]


def test_causal_lm_examples_pad_with_eos_and_mask_labels():
    inputs, labels = causal_lm_examples(_CharTokenizer(), ["ab", "abcd", "abcdefgh"], max_length=5)
    assert inputs["input_ids"].shape == (3, 5)
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert inputs["input_ids"][0, 3:].tolist() == [2, 2]  # eos as padding
    assert labels[0].tolist()[3:] == [-100, -100] and labels[1].tolist() == inputs["input_ids"][1].tolist()


def test_as_batches_dicts_trim_padding_and_shuffle_by_seed():
    examples = causal_lm_examples(_CharTokenizer(), ["a", "ab", "abcdef", "abc"], max_length=8)
    batches = as_batches(examples, 2)
    assert [sorted(b) for b in batches] == [["attention_mask", "input_ids", "labels"]] * 2
    assert [b["input_ids"].shape[1] for b in batches] == [3, 7]  # trimmed to the longest row of each
    shuffled = as_batches(examples, 2, seed=0)
    assert shuffled[0]["input_ids"].shape[0] == 2
    again = as_batches(examples, 2, seed=0)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(shuffled, again, strict=True))
    x, y = torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 2])
    assert [t.tolist() for _, t in as_batches((x, y), 2)] == [[0, 1], [2]]


def test_sample_texts_depend_on_the_seed_only_and_restore_the_global_generator():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                   bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    tok = _CharTokenizer()
    state = torch.random.get_rng_state()
    a = sample_texts(model, tok, 5, seed=7, max_new_tokens=6, batch_size=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(a) == 5 and a == sample_texts(model, tok, 5, seed=7, max_new_tokens=6, batch_size=2)
    assert a != sample_texts(model, tok, 5, seed=8, max_new_tokens=6, batch_size=2)


# ---------------------------------------------------------------------------- the shared files
def test_shared_cifar10_and_sst2_when_present():
    zip_path, sst2 = find_shared(CIFAR10_ZIP), find_shared("sst2")
    if zip_path is None or sst2 is None:
        pytest.skip("../shared/data (cifar10-jpeg.zip, sst2) is not present")
    x, y = read_cifar10_zip(zip_path, "test", per_class=1)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))
    texts, labels = read_sst2(sst2, "dev")
    assert len(texts) == 872 and sum(labels) == 444  # the counts of ../shared/data/README.md
