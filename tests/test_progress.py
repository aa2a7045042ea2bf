"""Progress bars: explicit ones need tqdm, default-on ones do without it (one warning)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

import spsa_mix.progress as progress


@pytest.fixture
def no_tqdm(monkeypatch):
    """As if tqdm were not installed; the warn-once state is fresh."""
    for name in ("tqdm", "tqdm.auto", "tqdm.std"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` then raises ImportError
    monkeypatch.setattr(progress, "_warned", False)


def test_without_tqdm_default_bars_are_off_with_one_warning(no_tqdm, caplog):
    with caplog.at_level(logging.WARNING, logger="spsa_mix"):
        assert progress.progress_bar(10, "experts") is None
        assert progress.progress_bar(10, "fine-tune", unit="batch", leave=False) is None
        assert progress.progress_enabled(True) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tqdm is not installed, so no progress bars are shown; to see them: pip install tqdm" in warnings[0].getMessage()


def test_without_tqdm_an_explicit_bar_is_an_error_that_names_the_fix(no_tqdm):
    with pytest.raises(ValueError, match=r"^show_progress_bar=True needs tqdm, .*pip install 'spsa-mix\[extras\]'"):
        progress.require_tqdm("show_progress_bar=True")


def test_without_tqdm_lines_are_printed_plainly(no_tqdm):
    out = io.StringIO()
    progress.write("expert 0: trained", file=out)
    assert out.getvalue() == "expert 0: trained\n"


def test_a_bar_not_asked_for_needs_no_tqdm_and_logs_nothing(no_tqdm, caplog):
    with caplog.at_level(logging.WARNING, logger="spsa_mix"):
        assert progress.progress_bar(10, "x", enabled=False) is None
        assert progress.progress_enabled(False) is False
    assert caplog.records == []


def test_with_tqdm_a_bar_counts(capsys):
    pytest.importorskip("tqdm")
    bar = progress.progress_bar(3, "steps", unit="step", disable=False)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "steps" in capsys.readouterr().err and bar.n == 3


def test_without_tqdm_the_experiment_runs_with_progress_on(no_tqdm, tmp_path, caplog):
    """The pipeline's bars (experts, alpha through minimize, fine-tuning) fall back, once."""
    from spsa_mix.experiment import ExperimentConfig, run_experiment

    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path), configs=("spsa", "uniform"))
    with caplog.at_level(logging.WARNING, logger="spsa_mix"):
        res = run_experiment(cfg, progress=True)
    assert res["status"] == "complete", res["errors"]
    assert [r.getMessage() for r in caplog.records if "tqdm" in r.getMessage()] == [
        f"tqdm is not installed, so no progress bars are shown; to see them: {progress.INSTALL_HINT}"]


def test_without_tqdm_the_commands_run_with_progress_on(no_tqdm, tmp_path, caplog):
    from spsa_mix.cli import main

    with caplog.at_level(logging.WARNING, logger="spsa_mix"):
        assert main(["bench", "compare", "--k", "3", "--budget", "20", "--seeds", "1", "--methods", "spsa",
                     "--quiet", "--output", str(tmp_path / "c.json")]) == 0
        assert main(["bench", "variance", "--k", "2", "--m", "1", "--samples", "50", "--space", "alpha",
                     "--directions", "gaussian", "--output", str(tmp_path / "v.json"), "--plot", ""]) == 0
        assert main(["experiment", "--quick", "--configs", "uniform", "--cache-dir", str(tmp_path / "cache"),
                     "--output", str(tmp_path / "g.json")]) == 0  # its log lines go through progress.write
    assert sum("tqdm is not installed" in r.getMessage() for r in caplog.records) == 1
    assert all((tmp_path / name).is_file() for name in ("c.json", "v.json", "g.json"))
