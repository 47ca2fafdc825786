"""The ``roost`` command-line frontend (a D-Bus client only)."""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``roost`` command."""
    raise SystemExit("roost: the command-line frontend is not built yet")
