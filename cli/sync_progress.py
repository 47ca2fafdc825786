"""Following one node's sync over the bus: its end, and a live progress bar for people.

``roost cache sync`` starts a sync and waits here for it to end, fed by the daemon's
SyncProgress and SyncStateChanged signals; the node's state (GetNodeState) confirms
each end, so that another node's signal or an earlier sync's completion is never taken
for this one's.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from roost.cli.output import error_console

if TYPE_CHECKING:
    import asyncio

    from roost.bridge.client import RoostClient

# The states a sync ends in.
ENDED = frozenset({"completed", "error", "no_sync"})


class SyncWatch:
    """Follows one node's sync through SyncProgress and SyncStateChanged.

    Signals name the profile (never ``""``) and the service's JID (the account's for its
    own PEP): with SERVICE ``-`` any service of that profile and node is taken, and its
    end is checked against GetNodeState of the node asked for.
    """

    def __init__(self, profile: str, service: str, node: str) -> None:
        import asyncio

        self.profile = profile
        self.service = service
        self.node = node
        self.done = 0
        self.total = 0
        self.states: asyncio.Queue[str] = asyncio.Queue()
        self.progressed = asyncio.Event()

    def matches(self, profile: str, service: str, node: str) -> bool:
        """Whether a signal is about the node followed."""
        # Bare JIDs compare as XMPP normalises them (signals carry the normalised form).
        return (
            profile == self.profile
            and node == self.node
            and (not self.service or service.lower() == self.service.lower())
        )

    def on_progress(self, profile: str, service: str, node: str, done: int, total: int) -> None:
        """A SyncProgress signal."""
        if self.matches(profile, service, node):
            self.done, self.total = int(done), int(total)
            self.progressed.set()

    def on_state(self, profile: str, service: str, node: str, state: str) -> None:
        """A SyncStateChanged signal."""
        if self.matches(profile, service, node):
            self.states.put_nowait(state)


async def follow_sync(
    client: RoostClient, profile: str, service: str, node: str, show_progress: bool
) -> dict[str, Any]:
    """Start the node's sync and wait for its end; the node's state then."""
    name = profile or await client.get_default_profile()
    if not name:
        # Let the daemon say it (NotFound: no default profile).
        await client.get_node_state(profile, service, node)
    watch = SyncWatch(name, service, node)
    stops = [
        await client.on_sync_progress(watch.on_progress),
        await client.on_sync_state_changed(watch.on_state),
    ]
    started = time.time()
    try:
        await client.sync_node(profile, service, node)
        if show_progress:
            return await _with_progress(client, watch, profile, started)
        return await _until_ended(client, watch, profile, started)
    finally:
        for stop in stops:
            stop()


async def _until_ended(
    client: RoostClient, watch: SyncWatch, profile: str, started: float
) -> dict[str, Any]:
    running = False
    while True:
        state = await watch.states.get()
        if state == "in_progress":
            running = True
            continue
        if state not in ENDED and not (state == "none" and running):
            continue
        found = await client.get_node_state(profile, watch.service, watch.node)
        if found["state"] != state and not (state == "none" and found["state"] == "none"):
            continue  # another node's signal (SERVICE '-'), or already moved on
        if state == "completed" and float(found.get("synced_at") or 0) < started - 1:
            continue  # an earlier sync's completion, not this one's
        return found


async def _with_progress(
    client: RoostClient, watch: SyncWatch, profile: str, started: float
) -> dict[str, Any]:
    import asyncio

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    ended = asyncio.ensure_future(_until_ended(client, watch, profile, started))
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console(),
        transient=False,
    ) as progress:
        task = progress.add_task(f"syncing {watch.node}", total=None)
        try:
            while not ended.done():
                waiter = asyncio.ensure_future(watch.progressed.wait())
                await asyncio.wait({ended, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                watch.progressed.clear()
                progress.update(task, completed=watch.done, total=watch.total or None)
            found = ended.result()
            count = int(found.get("item_count", watch.done))
            if found.get("state") == "completed":
                progress.update(task, completed=count, total=count)
        finally:
            ended.cancel()
    return found
