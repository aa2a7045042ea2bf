"""How long the README's commands take here: each run as written (after the install), timed.

The commands are read from ``README.md`` itself, so the times it quotes are those of what it
says: the main job (``spsa-mix experiment``, once with an empty cache so that the experts are
trained, once again with them cached), the test run (``python -m pytest``: the default run,
``slow`` tests left out), the merge example (``build_experts.py lm && spsa-mix merge
examples/merge/lm.yaml``, and the same for ``lora`` and ``vision``), and every Python block
run as a script. The install part of a command (``python3 -m venv .venv && .venv/bin/pip
install ...``) is left out: it needs the network. ``.venv`` is this checkout's. Each
command runs in a fresh temporary folder (a copy of ``examples/merge`` for the merges; the
experiment's outputs and cache there too), except the tests, which run in the checkout.

Writes ``benchmarks/results/readme_times.json`` and ``.md`` (its table is quoted in the
README between ``generated`` markers, ``python benchmarks/sync_docs.py``).

Usage::

    python benchmarks/readme_times.py               # everything (the test run takes longest)
    python benchmarks/readme_times.py --skip tests  # the rest
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INSTALL = re.compile(r"^python3 -m venv \.venv && \.venv/bin/pip install -e \"[^\"]+\" && ")
KINDS = ("experiment", "tests", "merge", "python")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip", nargs="*", choices=KINDS, default=[], help="kinds of command not to run")
    p.add_argument("--venv", type=Path, default=ROOT / ".venv", help="the installed environment (default: ./.venv)")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "readme_times.json")
    p.add_argument("--note", default="", help="free text stored with the results (the machine's state)")
    return p.parse_args(argv)


def readme_commands(text: str) -> dict[str, str]:
    """The README's commands, the install part left out: ``experiment``, ``tests``, ``merge lm``."""
    blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]
    found: dict[str, str] = {}
    for b in blocks:
        if "\n" in b or "#" in b:
            continue
        rest = INSTALL.sub("", b)
        if b.endswith("spsa-mix experiment") and INSTALL.match(b):
            found["experiment"] = rest
        elif b.endswith("-m pytest") and INSTALL.match(b):
            found["tests"] = rest
        elif "build_experts.py lm" in b and "spsa-mix merge" in b:
            found["merge lm"] = b
    missing = {"experiment", "tests", "merge lm"} - set(found)
    if missing:
        raise ValueError(f"README.md: no bash block for {sorted(missing)}")
    for kind in ("lora", "vision"):
        found[f"merge {kind}"] = found["merge lm"].replace("build_experts.py lm", f"build_experts.py {kind}").replace(
            "examples/merge/lm.yaml", f"examples/merge/{kind}.yaml")
    return found


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def run(command: str, cwd: Path, venv: Path, env: dict[str, str]) -> dict[str, Any]:
    """``command`` (bash) in ``cwd`` with ``.venv`` meaning ``venv``: wall and CPU seconds."""
    shell = command.replace(".venv/", f"{venv}/")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    done = subprocess.run(["bash", "-c", shell], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return {"command": command, "seconds": wall, "cpu_seconds": cpu, "returncode": done.returncode,
            "load_average": [load, os.getloadavg()[0]], "last_line": tail[0][-300:]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = (ROOT / "README.md").read_text()
    commands = readme_commands(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # as a newcomer runs them
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="readme_times_") as tmp:
        work = Path(tmp)
        if "experiment" not in args.skip:
            folder = work / "experiment"
            folder.mkdir()
            cache = {**env, "SPSA_MIX_CACHE": str(work / "cache")}
            rows.append({"what": "the main job, experts trained (empty cache)",
                         **run(commands["experiment"], folder, args.venv, cache)})
            shutil.rmtree(folder / "runs", ignore_errors=True)
            rows.append({"what": "the main job again, experts cached", **run(commands["experiment"], folder, args.venv,
                                                                             cache)})
        if "merge" not in args.skip:
            for kind in ("lm", "lora", "vision"):
                folder = work / f"merge_{kind}"
                shutil.copytree(ROOT / "examples" / "merge", folder / "examples" / "merge",
                                ignore=shutil.ignore_patterns("build"))
                rows.append({"what": f"the merge example `{kind}` (its experts built first)",
                             **run(commands[f"merge {kind}"], folder, args.venv, env)})
        if "python" not in args.skip:
            for i, block in enumerate(python_blocks(text), 1):
                script = work / f"block{i}.py"
                script.write_text(block)
                rows.append({"what": f"Python block {i} of the README, as a script",
                             **run(f".venv/bin/python {script}", work, args.venv, env)})
        if "tests" not in args.skip:
            rows.append({"what": "the test run (the default: slow tests left out)",
                         **run(commands["tests"], ROOT, args.venv, env)})
    failed = [r for r in rows if r["returncode"] != 0]
    doc = {"command": shlex.join(["python", "benchmarks/readme_times.py", *(argv if argv is not None else sys.argv[1:])]),
           "note": args.note, "rows": rows, "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                                                        "platform": platform.platform()}}
    from spsa_mix.io import atomic_write_text, write_json

    write_json(doc, args.output, indent=1)
    lines = [f"# The README's commands, timed ({os.cpu_count()} cores)", "",
             f"Command: `{doc['command']}`. {args.note}".rstrip(), "",
             "| what | seconds (wall) | CPU seconds | load average (start) | exit status |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['load_average'][0]:.1f} | "
              f"{r['returncode']} |" for r in rows]
    atomic_write_text(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    for r in failed:
        print(f"FAILED ({r['returncode']}): {r['command']}: {r['last_line']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
