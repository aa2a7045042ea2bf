"""Every output path of every command is checked before any work: exit 2, one line that
names the option, the path and why (``spsa_mix.io.check_writable``); and so is the device."""

from __future__ import annotations

from pathlib import Path

import pytest

from spsa_mix.cli import main

from ..fs_helpers import read_only_folder

COMMANDS = {
    "experiment": ["experiment", "--quick", "--configs", "uniform", "--no-progress"],
    "compare": ["bench", "compare", "--k", "3", "--budget", "5", "--seeds", "1", "--methods", "spsa", "--no-progress",
                "--quiet"],
    "variance": ["bench", "variance", "--k", "2", "--m", "1", "--samples", "10", "--directions", "gaussian",
                 "--sum-zero", "on", "--no-progress", "--quiet"],
}
OPTIONS = {
    "experiment": ["--output", "--markdown", "--plot", "--cache-dir"],
    "compare": ["--output", "--csv", "--plot"],
    "variance": ["--output", "--plot", "--csv"],
}
FOLDERS = {"--cache-dir"}




def _good_paths(command: str, tmp: Path) -> list[str]:
    """Every output of ``command`` somewhere good (so that only the bad one fails)."""
    good = {"--output": tmp / "out" / "r.json", "--markdown": tmp / "out" / "r.md", "--plot": tmp / "out" / "f.png",
            "--csv": tmp / "out" / "r.csv", "--cache-dir": tmp / "cache"}
    return [w for option in OPTIONS[command] for w in (option, str(good[option]))]


def _bad_path(kind: str, option: str, tmp: Path) -> tuple[Path, str]:
    (tmp / "a-file").write_text("x")
    (tmp / "a-folder").mkdir(exist_ok=True)
    if kind == "folder" and option not in FOLDERS:
        return tmp / "a-folder", "it is a folder"
    if kind == "folder":  # a folder option given a file
        return tmp / "a-file", "it is a file, not a folder"
    if kind == "under-a-file":
        return tmp / "a-file" / "sub" / "x.out", f"{str(tmp / 'a-file')!r} is a file, not a folder"
    ro = read_only_folder(tmp)
    return ro / "new" / "x.out", f"cannot create files in {str(ro)!r} ("


@pytest.mark.parametrize("kind", ["folder", "under-a-file", "read-only"])
@pytest.mark.parametrize(("command", "option"), [(c, o) for c in COMMANDS for o in OPTIONS[c]])
def test_a_bad_output_path_exits_2_before_any_work(command, option, kind, tmp_path, capsys):
    bad, why = _bad_path(kind, option, tmp_path)
    argv = [*COMMANDS[command], *_good_paths(command, tmp_path), option, str(bad)]
    try:
        code = main(argv)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    err = capsys.readouterr().err
    verb = "used" if option in FOLDERS else "written"
    assert code == 2, err
    assert err.count("\n") == 1 and f"error: {option} {str(bad)!r} cannot be {verb}: {why}" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # nothing was run


def test_two_options_naming_one_file_exit_2(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([*COMMANDS["compare"], "--output", str(out), "--csv", str(out)]) == 2
    assert f"error: --csv and --output name the same file {str(out)!r}" in capsys.readouterr().err
    assert not out.exists()


def test_render_checks_the_files_it_rewrites(tmp_path, capsys):
    results = tmp_path / "r.json"
    results.write_text('{"runs": []}')
    (tmp_path / "png").mkdir()
    assert main(["experiment", "--render", str(results), "--plot", str(tmp_path / "png")]) == 2
    err = capsys.readouterr().err
    assert f"error: --plot {str(tmp_path / 'png')!r} cannot be written: it is a folder" in err, err
    assert not results.with_suffix(".md").exists()


def test_compare_network_refuses_an_absent_gpu_before_training(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main([*COMMANDS["compare"], "--problem", "network", "--device", "cuda", "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "device='cuda' is not available: torch.cuda.is_available() is False" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("command", ["experiment", "compare"])
def test_the_meta_device_is_refused_before_any_work(command, tmp_path, capsys):
    pytest.importorskip("torch")
    argv = [*COMMANDS[command], *_good_paths(command, tmp_path), "--device", "meta"]
    if command == "compare":
        argv += ["--problem", "network"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "device='meta' holds no data: nothing can be scored there" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
