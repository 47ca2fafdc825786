"""Options shared by many ``roost`` subcommands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(function: F) -> F:
    """``--json``: print one JSON document (stable keys, docs/cli.md) instead of tables."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout (for scripts) instead of human output.",
    )(function)


def profile_option(function: F) -> F:
    """``-p/--profile``: the profile to act as (default: the daemon's default profile)."""
    return click.option(
        "-p",
        "--profile",
        default="",
        metavar="NAME",
        envvar="ROOST_PROFILE",
        help="Profile to use (default: the default profile).",
    )(function)
