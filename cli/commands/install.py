"""``roost install-user-services``: D-Bus activation and a systemd unit for this user.

A distribution package installs both files system-wide (README, "For packagers"); an
installation with pip has none, so nothing starts ``roostd`` when a frontend calls it.
This command writes the two templates shipped in the package (``roost/cli/data``), with
this installation's ``roostd`` filled in, where the session bus and systemd look for a
user's own: ``$XDG_DATA_HOME/dbus-1/services`` and ``$XDG_CONFIG_HOME/systemd/user``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.session import fail

DBUS_TEMPLATE = "org.roost.Backend1.service.in"
SYSTEMD_TEMPLATE = "roostd.service.in"


@dataclass(frozen=True)
class ServiceFile:
    """One file to write: its template in the package, where it goes, what it is for."""

    template: str
    target: Path
    what: str


def data_home() -> Path:
    """``$XDG_DATA_HOME``, else ``~/.local/share`` (a relative value is ignored, as the
    XDG specification asks)."""
    return _xdg("XDG_DATA_HOME", Path(".local", "share"))


def config_home() -> Path:
    """``$XDG_CONFIG_HOME``, else ``~/.config``."""
    return _xdg("XDG_CONFIG_HOME", Path(".config"))


def _xdg(variable: str, default: Path) -> Path:
    value = os.environ.get(variable, "")
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / default


def service_files() -> list[ServiceFile]:
    """The activation file and the systemd user unit, and where each goes."""
    return [
        ServiceFile(
            DBUS_TEMPLATE,
            data_home() / "dbus-1" / "services" / "org.roost.Backend1.service",
            "D-Bus activation",
        ),
        ServiceFile(
            SYSTEMD_TEMPLATE,
            config_home() / "systemd" / "user" / "roostd.service",
            "systemd user unit",
        ),
    ]


def find_roostd() -> Path | None:
    """This installation's ``roostd``: the console script beside the interpreter running
    ``roost`` (a virtual environment's ``bin``), else the first on ``PATH``."""
    beside = Path(sys.executable).absolute().with_name("roostd")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("roostd")
    return Path(found).absolute() if found else None


def template_text(name: str) -> str:
    """A template shipped in the package."""
    from importlib.resources import files

    return files("roost.cli").joinpath("data", name).read_text(encoding="utf-8")


HEADER = (
    "# Written by 'roost install-user-services' for {roostd};\n"
    "# 'roost install-user-services --uninstall' removes it.\n"
)


def render(template: str, roostd: Path) -> str:
    """``template`` with ``@bindir@/roostd`` made this installation's ``roostd``, its
    opening comment (for packagers) replaced by one saying where the file comes from.

    A path with spaces is quoted: both the bus and systemd split ``Exec`` lines on
    whitespace and honour double quotes.
    """
    command = str(roostd)
    if any(c.isspace() for c in command) or '"' in command:
        escaped = command.replace("\\", "\\\\").replace('"', '\\"')
        command = f'"{escaped}"'
    lines = template.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    body = "".join(lines).replace("@bindir@/roostd", command)
    return HEADER.format(roostd=roostd) + body


@click.command("install-user-services")
@click.option("--uninstall", is_flag=True, help="Remove the files an earlier run wrote instead.")
def install_user_services(uninstall: bool) -> None:
    """Let the session bus start roostd on demand, for this user (pip installs).

    Writes the D-Bus activation file to $XDG_DATA_HOME/dbus-1/services (default
    ~/.local/share/dbus-1/services) and the systemd user unit roostd.service to
    $XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user), both naming this
    installation's roostd by its absolute path. Needs no running daemon. A distribution
    package installs them system-wide instead.
    """
    files = service_files()
    if uninstall:
        for each in files:
            try:
                each.target.unlink()
            except FileNotFoundError:
                click.echo(f"Not there: {each.target} ({each.what})")
            except OSError as exc:
                fail(f"cannot remove {each.target}: {exc.strerror or exc}", ExitCode.FAILURE)
            else:
                click.echo(f"Removed {each.target} ({each.what})")
        return
    roostd = find_roostd()
    if roostd is None:
        fail(
            f"cannot find roostd beside {sys.executable} or on PATH; is Roost installed?",
            ExitCode.FAILURE,
        )
    for each in files:
        text = render(template_text(each.template), roostd)
        try:
            each.target.parent.mkdir(parents=True, exist_ok=True)
            partial = each.target.with_name(each.target.name + ".tmp")
            partial.write_text(text, encoding="utf-8")
            partial.chmod(0o644)
            partial.replace(each.target)
        except OSError as exc:
            fail(f"cannot write {each.target}: {exc.strerror or exc}", ExitCode.FAILURE)
        click.echo(f"Wrote {each.target} ({each.what}, starts {roostd})")
    click.echo(
        "The session bus starts roostd when a frontend first calls it (dbus-daemon rereads "
        "its service directories on its own). Under systemd, run "
        "'systemctl --user daemon-reload' once so that it knows roostd.service."
    )
