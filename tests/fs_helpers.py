"""File-system helpers shared by the tests of output paths."""

from __future__ import annotations

from pathlib import Path

import pytest


def refuses_files(folder: Path) -> bool:
    """Whether this process cannot create a file in ``folder``."""
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return True
    probe.unlink()
    return False


def read_only_folder(tmp: Path) -> Path:
    """A folder this process cannot create files in: ``tmp / "ro"`` made mode 555, or, for
    root (who writes there anyway), ``/sys`` (``tmp / "ro"`` then back to 755); skips the
    test where neither refuses. The caller restores the mode of ``tmp / "ro"`` if it needs to."""
    folder = tmp / "ro"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    if refuses_files(folder):
        return folder
    folder.chmod(0o755)
    if Path("/sys").is_dir() and refuses_files(Path("/sys")):
        return Path("/sys")
    pytest.skip("no folder refuses writes here")
