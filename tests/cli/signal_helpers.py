"""Helpers for the tests that interrupt a command with a real SIGINT."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn`` for a child that must receive SIGINT as a user's Ctrl-C.

    A test run started in the background by a non-interactive shell (``cmd &`` in a CI
    script) ignores SIGINT, children inherit that, and a Python started with SIGINT ignored
    installs no ``KeyboardInterrupt`` handler: the signal would do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
