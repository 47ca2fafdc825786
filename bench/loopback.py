"""The world the daemon benchmarks share: a private bus, ejabberd and roostd on loopback.

``ejabberd_world`` sets them up in a temporary directory and takes them down;
``comment_entry`` is the XEP-0277 comment the benches fill nodes with; ``sync_node``
meets a node as a frontend does and waits for its sync to end.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.bridge.client import RoostClient
from tests.fixtures.dbus import PrivateBus, RoostdLauncher, start_bus, stop_bus
from tests.fixtures.xmpp import EjabberdServer, free_port

ATOM = "http://www.w3.org/2005/Atom"
#: The node name prefix the built-in microblog analyser synchronises on a pubsub service.
COMMENTS = "urn:xmpp:microblog:0:comments/"


def comment_entry(n: int) -> str:
    """A small XEP-0277 comment (an Atom entry), about 300 bytes, 200 authors in turn."""
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{n}</id><title>Comment {n}</title>"
        f"<author><name>user{n % 200}</name><uri>xmpp:user{n % 200}@localhost</uri>"
        f"</author><content type='text'>Body of comment {n}, a few words long.</content>"
        "<published>2026-01-01T00:00:00Z</published></entry>"
    )


@dataclass
class LoopbackWorld:
    """What :func:`ejabberd_world` set up."""

    workdir: Path
    bus: PrivateBus
    launcher: RoostdLauncher
    #: A roostd config file keeping nodes whole up to the size asked for.
    config: Path
    server: EjabberdServer


@contextmanager
def ejabberd_world(prefix: str, max_items_per_node: int) -> Iterator[LoopbackWorld]:
    """A private bus, an ejabberd set up (not yet filled) and a launcher of roostd
    daemons, in a temporary directory; every daemon, the server and the bus stopped at
    the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        bus = start_bus(workdir / "bus")
        (workdir / "roostd").mkdir()
        (workdir / "ejabberd").mkdir(mode=0o755)
        launcher = RoostdLauncher(workdir / "roostd", bus.address)
        config = workdir / "roost.toml"
        config.write_text(f"[cache]\nmax_items_per_node = {max_items_per_node}\n")
        server = EjabberdServer(kind="ejabberd", data_dir=workdir / "ejabberd", port=free_port())
        try:
            server.setup()
            yield LoopbackWorld(workdir, bus, launcher, config, server)
        finally:
            launcher.stop_all()
            server.stop()
            stop_bus(bus)


async def sync_node(
    client: RoostClient, profile: str, service: str, node: str, within: float = 1800
) -> float:
    """Meet ``node`` with a GetItems (it is analysed, then synchronised); wait for
    ``completed`` and return the seconds it took.

    Raises:
        RuntimeError: the sync ended otherwise (its node state in the message).
    """
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def changed(_profile: str, _service: str, changed_node: str, state: str) -> None:
        if changed_node == node and state in ("completed", "error", "no_sync") and not done.done():
            done.set_result(state)

    unsubscribe = await client.on_sync_state_changed(changed)
    started = time.perf_counter()
    try:
        await client.get_items(profile, service, node, max_items=1)
        state = await asyncio.wait_for(done, within)
    finally:
        unsubscribe()
    elapsed = time.perf_counter() - started
    if state != "completed":
        raise RuntimeError(f"{node}: {await client.get_node_state(profile, service, node)}")
    return elapsed
