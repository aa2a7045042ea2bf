"""The record of what a merge's result depends on, compared by --resume (spsa_mix/merge/fingerprint.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spsa_mix.merge import fingerprint as fp
from spsa_mix.merge.config import MergeConfig


def _setup(tmp_path: Path) -> tuple[MergeConfig, list[Path]]:
    experts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "model.safetensors").write_bytes(name.encode() * 100)
        experts.append(tmp_path / name)
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n')
    cfg = MergeConfig.from_dict({"experts": [str(p) for p in experts], "data": str(tmp_path / "t.jsonl"),
                                 "output": str(tmp_path / "m")})
    return cfg, experts


def test_the_same_run_matches_and_what_does_not_matter_is_ignored(tmp_path: Path) -> None:
    cfg, experts = _setup(tmp_path)
    old = fp.fingerprint(cfg, experts)
    same = MergeConfig.from_dict({**cfg.to_dict(), "output": str(tmp_path / "n"), "overwrite": True,
                                  "checkpoint_every": 3, "select": "learned", "device": "cpu", "budget": 800})
    fp.compare(old, fp.fingerprint(same, experts))  # a larger budget continues the run


@pytest.mark.parametrize(("change", "message"), [
    ({"seed": 1}, "seed was 0, now 1"),
    ({"options": {"lr": 0.1}}, "options was {}, now {'lr': 0.1}"),
    ({"budget": 10}, "budget was 400, now 10"),
    ({"dtype": "bfloat16"}, "dtype was None, now 'bfloat16'"),
    ({"method": "forward-grad"}, "method was 'spsa', now 'forward-grad'"),
])
def test_a_changed_value_is_named(tmp_path: Path, change: dict, message: str) -> None:
    cfg, experts = _setup(tmp_path)
    new = MergeConfig.from_dict({**cfg.to_dict(), **change})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")):
        fp.compare(fp.fingerprint(cfg, experts), fp.fingerprint(new, experts))


def test_inputs_are_compared_by_what_they_hold_not_where(tmp_path: Path) -> None:
    cfg, experts = _setup(tmp_path)
    old = fp.fingerprint(cfg, experts)
    with pytest.raises(ValueError, match=r"experts\[0\] differs from the run's: .*content changed \(now .*b\); "
                                         r"experts\[1\] differs"):
        fp.compare(old, fp.fingerprint(cfg, experts[::-1]))
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in experts:
        os.rename(p, moved / p.name)  # a rename keeps sizes, times and bytes
    fp.compare(old, fp.fingerprint(cfg, [moved / "a", moved / "b"]))
    (moved / "b" / "extra.json").write_text("{}")
    with pytest.raises(ValueError, match=r"experts\[1\] differs from the run's: extra.json: added"):
        fp.compare(old, fp.fingerprint(cfg, [moved / "a", moved / "b"]))


def test_a_big_folder_is_recorded_by_one_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "MAX_LISTED", 2)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    old = fp.identity(tmp_path)
    assert set(old) == {"count", "digest"} and old["count"] == 3
    (tmp_path / "3.png").write_bytes(b"x")
    assert fp.identity(tmp_path) != old


def test_resume_needs_a_record_that_matches(tmp_path: Path) -> None:
    cfg, experts = _setup(tmp_path)
    assert fp.check_resume(cfg, experts) is False  # no state: nothing to resume, nothing to check
    cfg.state_path().write_text("{}")
    with pytest.raises(ValueError, match="there is no record of its config and inputs beside it"):
        fp.check_resume(cfg, experts)
    fp.write_record(fp.record_path(cfg), fp.fingerprint(cfg, experts), "write")
    assert fp.check_resume(cfg, experts) is True
    new = MergeConfig.from_dict({**cfg.to_dict(), "seed": 4})
    with pytest.raises(ValueError, match="cannot resume the run saved in .*m.state', which was started with other "
                                         "settings: seed was 0, now 4; resume with that run's config"):
        fp.check_resume(new, experts)
    fp.record_path(cfg).write_text("{")  # not a record
    assert fp.read_record(fp.record_path(cfg)) is None
