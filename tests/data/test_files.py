"""Target data from files: text with the model's tokenizer, image folders, tensors, references."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spsa_mix.data.batches import Batches
from spsa_mix.data.files import (
    data_kind,
    load_image_folder,
    load_reference,
    load_tensors,
    read_texts,
    texts_to_data,
)


class WordTokenizer:
    """A whitespace tokenizer with the Hugging Face call convention (enough for these tests)."""

    pad_token_id = 0

    def __init__(self, words: list[str]) -> None:
        self.vocab = {w: i + 1 for i, w in enumerate(sorted(set(words)))}

    def __len__(self) -> int:
        return len(self.vocab) + 1

    def __call__(self, texts, truncation, max_length, add_special_tokens):
        return {"input_ids": [[self.vocab[w] for w in t.split()][:max_length] for t in texts]}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".txt"])
def test_every_text_format_reads_the_same_examples(tmp_path: Path, suffix: str) -> None:
    rows = [("the cat sat", "pos"), ("a dog", "neg"), ("cats, dogs", "pos")]
    p = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        p.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    elif suffix == ".txt":
        p.write_text("\n".join(t for t, _ in rows) + "\n\n")
    else:
        sep = "\t" if suffix == ".tsv" else ","
        p.write_text(f"text{sep}label\n" + "".join(f'"{t}"{sep}{y}\n' if sep == "," else f"{t}{sep}{y}\n"
                                                     for t, y in rows))
    label_field = None if suffix == ".txt" else "label"
    texts, labels = read_texts(p, text_field="text", label_field=label_field)
    assert texts == [t for t, _ in rows]
    assert labels == (None if suffix == ".txt" else ["pos", "neg", "pos"])


def test_texts_are_tokenized_padded_and_labels_numbered(tmp_path: Path) -> None:
    train = (["b a a", "c"], ["pos", "neg"])
    tok = WordTokenizer(["a", "b", "c"])
    d = texts_to_data("t", train, (["a"], ["neg"]), tok, max_length=2, source="test")
    assert d.ids_train.tolist() == [[2, 1], [3, 0]] and d.mask_train.tolist() == [[1, 1], [1, 0]]
    assert d.classes == ("neg", "pos") and d.y_train.tolist() == [1, 0] and d.y_test.tolist() == [0]


def test_a_language_model_keeps_the_examples_with_a_next_token(tmp_path: Path) -> None:
    tok = WordTokenizer(["a", "b", "c"])
    d = texts_to_data("t", (["b a", "c", "a b c"], None), (["a", "b c"], None), tok, max_length=4, source="t.txt",
                      min_tokens=2)
    assert d.ids_train.tolist() == [[2, 1, 0, 0], [1, 2, 3, 0]] and d.ids_test.tolist() == [[2, 3, 0, 0]]
    with pytest.raises(ValueError, match="t.txt: no example has 2 tokens or more \\(the longest has 1\\): a "
                                         "language model's loss needs a next token"):
        texts_to_data("t", (["a", "b"], None), None, tok, max_length=4, source="t.txt", min_tokens=2)
    with pytest.raises(ValueError, match="^v.txt: no example"):
        texts_to_data("t", (["a b"], None), (["a"], None), tok, max_length=4, source="t.txt", min_tokens=2,
                      validation_source="v.txt")


def test_text_errors_name_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl: line 2 has no field 'text' \(data.text_field\); it has \['body'\]"):
        read_texts(p)
    p.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_texts(p)
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no examples"):
        read_texts(tmp_path / "e.txt")


def test_nulls_short_rows_byte_order_marks_and_other_encodings(tmp_path: Path) -> None:
    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "a"}\n{"text": null}\n')
    with pytest.raises(ValueError, match=r"n.jsonl: line 2 has no value in its field 'text' \(data.text_field\)"):
        read_texts(p)
    c = tmp_path / "s.csv"
    c.write_text("text,label\nfine,pos\nshort\n")
    with pytest.raises(ValueError, match=r"s.csv: row 3 has no value in its field 'label' \(data.label_field\)"):
        read_texts(c, label_field="label")
    c.write_text("label,text\npos\n")
    with pytest.raises(ValueError, match="s.csv: row 2 has no value in its field 'text'"):
        read_texts(c)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftext,label\nhello,pos\n".encode())  # what Excel writes
    assert read_texts(bom, label_field="label") == (["hello"], ["pos"])
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes('\ufeff{"text": "hi"}\n'.encode())
    assert read_texts(bom) == (["hi"], None)
    latin = tmp_path / "l.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="cannot read '.*l.txt': it is not UTF-8 text \\(byte 3"):
        read_texts(latin)


def test_the_real_tokenizer_of_stories260k(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "stories260K"
    if not shared.is_dir():
        pytest.skip("../shared/data/stories260K is not present")
    from spsa_mix.data.files import load_tokenizer

    tok = load_tokenizer(shared)
    d = texts_to_data("s", (["Once upon a time", "The end"], None), None, tok, max_length=16, source="t")
    assert d.vocab_size == 512 and d.ids_train.shape[0] == 2 and int(d.mask_train[0].sum()) > 2
    with pytest.raises(ValueError, match="no tokenizer in"):
        load_tokenizer(tmp_path)


def test_image_folders_with_given_normalisation(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = load_image_folder(tmp_path / "train", tmp_path / "val", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert d.x_train.shape == (6, 3, 8, 8) and d.x_test.shape == (6, 3, 8, 8) and d.classes == ("cat", "dog")
    x, _ = next(iter(Batches(d, batch_size=6)))
    assert torch.allclose(x, (d.x_train.float() / 255 - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(ValueError, match="mean and std must both be given, one value per channel"):
        load_image_folder(tmp_path / "train", mean=[0.5])
    with pytest.raises(ValueError, match="not an image folder"):
        load_image_folder(tmp_path / "nothing")
    cut = tmp_path / "train" / "dog" / "1.png"
    cut.write_bytes(cut.read_bytes()[:60])  # a truncated image
    with pytest.raises(ValueError, match="cannot read the image '.*dog/1.png'"):
        load_image_folder(tmp_path / "train")


def test_tensor_files_and_what_they_must_hold(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"inputs": torch.ones(5, 2), "targets": torch.arange(5)}, str(tmp_path / "t.safetensors"))
    torch.save({"x": torch.zeros(2, 2), "y": torch.arange(2)}, tmp_path / "v.pt")
    d = load_tensors(tmp_path / "t.safetensors", tmp_path / "v.pt")
    assert [tuple(y.shape) for _, y in Batches(d, batch_size=3)] == [(3,), (2,)]
    assert [tuple(y.shape) for _, y in Batches(d, split="test", batch_size=3)] == [(2,)]
    torch.save({"inputs": torch.ones(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="has no 'targets'"):
        load_tensors(tmp_path / "bad.pt")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read tensors from"):
        load_tensors(tmp_path / "corrupt.safetensors")
    (tmp_path / "text.pt").write_text('{"text": "not tensors"}\n')
    with pytest.raises(ValueError) as refused:
        load_tensors(tmp_path / "text.pt")
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    assert "refused it (UnpicklingError): it holds objects other than tensors, or is not a PyTorch file" in str(
        refused.value)
    torch.save({"inputs": torch.ones(3, 2), "targets": [0, 2, 1]}, tmp_path / "list.pt")  # targets as a list
    assert load_tensors(tmp_path / "list.pt").labels().tolist() == [0, 2, 1]
    torch.save({"inputs": torch.ones(3, 2), "targets": torch.tensor([0, -1, 1])}, tmp_path / "neg.pt")
    with pytest.raises(ValueError, match="neg.pt: 'targets': example 1 has the target -1; class labels are 0, 1"):
        load_tensors(tmp_path / "neg.pt")
    torch.save({"inputs": torch.ones(3, 2), "targets": torch.tensor([0, -100, 1])}, tmp_path / "ignored.pt")
    load_tensors(tmp_path / "ignored.pt")  # -100: ignored by the cross-entropy
    torch.save({"inputs": torch.ones(3, 2), "targets": ["a", None, 1]}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="mixed.pt: 'targets' must be a tensor \\(or a list of numbers\\)"):
        load_tensors(tmp_path / "mixed.pt")


def test_kinds_and_references(tmp_path: Path) -> None:
    assert data_kind("x.tsv") == "text" and data_kind("torchvision:CIFAR10:/data") == "torchvision"
    assert data_kind(str(tmp_path)) == "images" and data_kind("pkg.mod:make") == "reference"
    with pytest.raises(ValueError, match="cannot tell what"):
        data_kind(str(tmp_path / "x.parquet"))
    assert load_reference("os.path:join")("a", "b") == "a/b"
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        load_reference("no_such_module:x")
