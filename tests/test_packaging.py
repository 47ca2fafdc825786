"""An install puts nothing at the top of site-packages but ``roost``, and it imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.slow


def test_install_maps_the_folders_into_the_roost_namespace(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    top = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert top - {"bin"} == {"roost"}
    packaged = target / "roost"
    assert {p.name for p in packaged.iterdir()} >= {"storage", "service", "bridge", "cli"}
    # Every package of the source folders is installed (a package missing from setup.cfg
    # would install without its modules).
    for folder in ("storage", "service", "bridge", "cli"):
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.relative_to(ROOT)
            assert (packaged / relative).exists(), f"{relative.parent} is not packaged"
    assert (packaged / "storage" / "migrations" / "alembic.ini").exists()
    assert (packaged / "storage" / "migrations" / "versions" / "0001_initial.py").exists()
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import roost.storage, roost.bridge.server; print(roost.storage.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert imported.stdout.strip() == str(packaged / "storage" / "__init__.py")
