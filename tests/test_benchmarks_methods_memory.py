"""benchmarks/methods_memory.py: its report from a results file and its checks of the arguments (no model runs)."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import methods_memory  # noqa: E402

MIB = 2**20


def _run(label, seed, base, peak, seconds=1.0):
    return {"label": label, "seed": seed, "seconds": seconds, "baseline": {"RssAnon": base * MIB, "RssFile": 300 * MIB},
            "peak": {"RssAnon": peak * MIB, "RssFile": 310 * MIB}}


def _results():
    runs = [_run("spsa_mix ties, budget 100", 0, 480, 490), _run("mergekit linear", 0, 480, 481),
            _run("spsa_mix ties, budget 100", 1, 480, 494, seconds=3.0), _run("mergekit linear", 1, 482, 483.5),
            _run("spsa_mix ties, budget 100", 2, 480, 491, seconds=2.0),
            {"label": "mergekit della (defaults)", "seed": 0, "error": "ValueError: boom"}]
    return {"command": "python benchmarks/methods_memory.py", "machine": "test", "k": 3, "expert_mib": 0.09,
            "budget": 100, "runs": runs, "status": "complete"}


def test_the_table_has_one_line_per_merge_in_the_jobs_order_with_medians_and_the_range_above_the_runtime():
    lines = methods_memory.render(_results()).splitlines()
    table = [line for line in lines if line.startswith(("| mergekit", "| spsa_mix"))]
    assert table == ["| mergekit linear | 2 | 481.0 | 482.2 | 1.2 (1.0 to 1.5) | 310.0 | 1.00 |",
                     "| spsa_mix ties, budget 100 | 3 | 480.0 | 491.0 | 11.0 (10.0 to 14.0) | 310.0 | 2.00 |"]
    assert lines[-1] == "- mergekit della (defaults) (seed 0) failed: ValueError: boom"  # recorded, not dropped


def test_render_rewrites_the_md_from_the_json(tmp_path):
    out = tmp_path / "m.json"
    out.write_text(json.dumps(_results()))
    assert methods_memory.main(["--render", "--output", str(out)]) == 0
    assert out.with_suffix(".md").read_text() == methods_memory.render(_results()) + "\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--repeats", "0"], "--repeats must be at least 1, but got 0"),
    (["--budget", "-5"], "--budget must be at least 1, but got -5"),
    (["--output", "r.md"], "--output must be a .json file"),
    (["--render", "--output", "missing.json"], "--render reads --output, which does not exist"),
])
def test_bad_arguments_exit_2_with_one_line_before_any_work(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        methods_memory.main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "spsa_mix_cache").exists()  # no expert was built


def test_an_output_that_cannot_be_written_is_refused_before_the_experts_are_built(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        methods_memory.main(["--output", str(tmp_path / "file" / "r.json")])
    assert e.value.code == 2 and "--output" in capsys.readouterr().err
    assert not (tmp_path / "spsa_mix_cache").exists()
