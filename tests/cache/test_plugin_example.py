"""The analyser plugin example of docs/developer.md, installed with pip and run by Roost.

The guide shows the example's files verbatim (each block follows an ``<!-- include: path
-->`` line); this test checks that every block is the file it names, installs the
example from a copy with pip (into a directory put on ``sys.path``, as a virtualenv's
site-packages is), and lets a daemon use it on a real node: so neither the guide nor the
example can drift from what works.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from roost.service.cache.analysers import AnalyserRegistry
from tests.fixtures.backend import running_backend
from tests.fixtures.world import XmppPeer, unique_names
from tests.fixtures.xmpp import XmppServer

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "developer.md"
EXAMPLE = ROOT / "docs" / "examples" / "calendar-plugin"
NS = "urn:example:calendar:0"
INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->\n```[a-z]*\n(?P<body>.*?)^```$", re.S | re.M)


def included() -> dict[str, str]:
    """The guide's included blocks, by the path they name."""
    return {m["path"]: m["body"] for m in INCLUDE.finditer(GUIDE.read_text())}


def test_the_guide_shows_every_file_of_the_example_as_it_is() -> None:
    blocks = included()
    files = sorted(str(path.relative_to(ROOT)) for path in EXAMPLE.rglob("*") if path.is_file())
    assert sorted(blocks) == files
    for path, body in blocks.items():
        assert body == (ROOT / path).read_text(), f"docs/developer.md shows another {path}"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed by pip from a copy (a build writes into its source tree)
    into a directory of its own; the directory is returned, not yet on sys.path."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "calendar-plugin"
    shutil.copytree(EXAMPLE, source)
    site = work / "site"

    # A fixture, run before any test's event loop: a blocking call is fine here.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return site


def test_the_example_installed_is_found_by_its_entry_point(
    installed_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed_example))
    registry = AnalyserRegistry()
    added = registry.load_entry_points()
    assert [a.name for a in added] == ["calendar"]
    described = registry.describe()[0]
    assert (described["name"], described["source"]) == ("calendar", "plugin")
    assert described["parser_version"] == "roost_calendar_analyser.parse_event:1"


@pytest.mark.xmpp
async def test_a_daemon_runs_the_example_on_a_calendar_node(
    installed_example: Path,
    monkeypatch: pytest.MonkeyPatch,
    xmpp_server: XmppServer,
    database_url: str,
) -> None:
    monkeypatch.syspath_prepend(str(installed_example))
    server = xmpp_server
    service = server.pubsub_service
    (me,) = unique_names("calendar", 1)
    await server.register_many([me])
    node = f"agenda-{uuid.uuid4().hex[:10]}"
    event = (
        f"<event xmlns='{NS}'><summary>Tea with Juliet</summary>"
        "<start>2026-03-01T16:00:00Z</start><location>Verona</location></event>"
    )
    async with XmppPeer(server, "alice") as peer:  # may create component nodes on both
        await peer.create_node(node, {"pubsub#access_model": "open"}, service=service)
        await peer.publish(node, "tea", event, service=service)
    async with running_backend(database_url, server, [me]) as (backend, log):
        await backend.connect(me)
        await backend.pubsub.get_items(me, service, node, {})
        await log.wait_state(service, node, "completed")
        state = await backend.pubsub.get_node_state(me, service, node)
        assert (state["analyser"], state["type"], state["subtype"]) == (
            "calendar",
            "calendar",
            "event",
        )
        reply = await backend.pubsub.get_items(me, service, node, {})
        assert reply.from_cache
        assert reply.items[0].parsed is not None
        assert json.loads(reply.items[0].parsed) == {
            "summary": "Tea with Juliet",
            "start": "2026-03-01T16:00:00Z",
            "start_ts": 1772380800.0,
            "location": "Verona",
        }
        hits = await backend.pubsub.search(
            {"types": ["calendar"], "parsed": [{"path": "start_ts", "op": "ge", "value": 1.7e9}]}
        )
        assert [h["id"] for h in hits] == ["tea"]
