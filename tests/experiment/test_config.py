"""The experiment configuration: defaults, presets, validation."""

from __future__ import annotations

import pytest

from spsa_mix.experiment.config import ALL_CONFIGS, ExperimentConfig, default_cache_dir


def test_defaults_follow_the_paper_where_it_says() -> None:
    cfg = ExperimentConfig()
    assert (cfg.k, cfg.dirichlet_alpha, cfg.expert_lr, cfg.expert_betas, cfg.expert_batch_size) == (
        10, 0.5, 1e-3, (0.9, 0.999), 64)
    assert (cfg.m, cfg.alpha_lr, cfg.alpha_betas, cfg.seeds) == (1, 1e-2, (0.9, 0.99), (0, 1, 2))
    assert cfg.configs == ALL_CONFIGS and len(ALL_CONFIGS) == 14  # GLUE's 11 rows, library defaults, two task-vector rows
    paper = ExperimentConfig.paper()
    assert (paper.per_expert, paper.target_size, paper.expert_epochs) == (2000, 10_000, 40)


def test_cache_dir_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SPSA_MIX_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert ExperimentConfig().resolved_cache_dir() == tmp_path
    assert ExperimentConfig(cache_dir=str(tmp_path / "x")).resolved_cache_dir() == tmp_path / "x"


def test_to_dict_is_json_ready() -> None:
    d = ExperimentConfig(per_expert=[1, 2], k=2).to_dict()
    assert d["per_expert"] == [1, 2] and d["seeds"] == [0, 1, 2] and d["expert_betas"] == [0.9, 0.999]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 1}, r"k must be an integer >= 2 \(a blend needs at least two experts\), but got 1"),
        ({"per_expert": 0}, "per_expert must be an integer >= 1, but got 0"),
        ({"k": 2, "per_expert": [1, 2, 3]}, r"per_expert must be one size or k=2 sizes, but got 3 sizes"),
        ({"budget": 0}, "budget must be an integer >= 1, but got 0"),
        ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0, but got -1"),
        ({"dirichlet_alpha": 0}, "dirichlet_alpha must be a positive number, but got 0"),
        ({"configs": ("spsa", "magic")}, r"configs must be a non-empty subset of \[.*\], but got \['spsa', 'magic'\]"),
        ({"configs": ("spsa", "spsa")}, "configs must not repeat a name"),
        ({"seeds": (1, 1)}, r"seeds must be distinct non-negative integers, but got \[1, 1\]"),
        ({"sail_features": "logits"}, "sail_features must be 'pixels' or 'penultimate', but got 'logits'"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**kwargs)


def test_the_alpha_losses_listed_for_the_cli_are_the_library_s() -> None:
    from spsa_mix.blend.losses import LOSSES
    from spsa_mix.experiment.config import ALPHA_LOSSES

    # multiple-choice scores question data (spsa_mix.data.text.ChoiceData), which no experiment task yields
    assert set(ALPHA_LOSSES) == (set(LOSSES) - {"multiple-choice"}) | {"calibrated"}
