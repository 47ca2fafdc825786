"""'roost watch': the daemon's signals as they happen, until interrupted."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.items import json_item
from roost.cli.options import json_option
from roost.cli.output import console
from roost.cli.session import CliOptions, CommandError, run_with_client

if TYPE_CHECKING:
    import asyncio

    from roost.bridge.client import RoostClient

#: What 'roost watch' shows, in the order of the documentation.
SIGNALS = (
    "Connected",
    "Disconnected",
    "ContactChanged",
    "SubscriptionRequest",
    "ItemsEvent",
    "SyncStateChanged",
    "SyncProgress",
)

#: Said on stderr once every subscription is in place: events from then on are shown.
READY_LINE = "Watching the daemon's signals (Ctrl-C to stop)."


class _StdoutClosed(Exception):
    """The reader of stdout went away ('roost watch | head')."""


class Printer:
    """Prints each signal: a JSON object a line, or a line for a person."""

    def __init__(self, as_json: bool, profile: str | None, stop: asyncio.Event) -> None:
        self.as_json = as_json
        self.profile = profile
        self.stop = stop
        self.closed = False

    def __call__(self, name: str, profile: str, **fields: Any) -> None:
        if self.closed or (self.profile is not None and profile != self.profile):
            return
        try:
            if self.as_json:
                line = json.dumps(
                    {"signal": name, "profile": profile, **fields},
                    ensure_ascii=False,
                    default=_jsonable,
                )
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            else:
                self._human(name, profile, fields)
        except BrokenPipeError:
            # Nobody reads any more: stop quietly, and keep Python's final flush of
            # stdout from failing too.
            self.closed = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            self.stop.set()

    def _human(self, name: str, profile: str, fields: dict[str, Any]) -> None:
        from rich.text import Text

        line = Text()
        line.append(time.strftime("%H:%M:%S "), style="dim")
        line.append(name, style="bold cyan")
        line.append(f" {profile}")
        if name == "ItemsEvent":
            items = fields["items"]
            ids = ", ".join(str(item.get("id", "")) for item in items[:10])
            more = f" and {len(items) - 10} more" if len(items) > 10 else ""
            line.append(f" {fields['service']} {fields['node']} {fields['kind']}:")
            line.append(f" {len(items)} item{'s' if len(items) != 1 else ''}")
            if ids:
                line.append(f" ({ids}{more})")
        elif name == "ContactChanged":
            contact = fields["contact"]
            line.append(f" {contact.get('jid', '')}")
            if contact.get("removed"):
                line.append(" removed", style="red")
            else:
                line.append(f" subscription={contact.get('subscription', '')}")
                if contact.get("name"):
                    line.append(f" name={contact['name']}")
                if contact.get("groups"):
                    line.append(f" groups={','.join(contact['groups'])}")
                if contact.get("pending_out"):
                    line.append(" (asked)")
                if contact.get("pending_in"):
                    line.append(" (asks us)")
        else:
            for key, value in fields.items():
                line.append(f" {key}={value}")
        console().print(line, soft_wrap=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@click.command("watch")
@click.option(
    "-p",
    "--profile",
    default=None,
    metavar="NAME",
    help="Show only the signals of this profile (default: every profile's).",
)
@json_option
@click.pass_obj
def watch(options: CliOptions, profile: str | None, as_json: bool) -> None:
    """Print the daemon's signals as they happen, until Ctrl-C (which exits with 0).

    Shown: Connected, Disconnected, ContactChanged, SubscriptionRequest, ItemsEvent,
    SyncStateChanged and SyncProgress. --json prints one JSON object a line (JSON
    Lines): '{"signal": "Connected", "profile": "work", "jid": "me@example.org/roost"}';
    docs/cli.md lists each signal's keys. A line on stderr says when watching started.
    """

    async def body(client: RoostClient) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        show = Printer(as_json, profile, stop)
        await client.on_connected(lambda name, jid: show("Connected", name, jid=jid))
        await client.on_disconnected(lambda name, reason: show("Disconnected", name, reason=reason))
        await client.on_contact_changed(
            lambda name, contact: show("ContactChanged", name, contact=contact)
        )
        await client.on_subscription_request(
            lambda name, jid: show("SubscriptionRequest", name, jid=jid)
        )
        await client.on_items_event(
            lambda name, service, node, kind, items: show(
                "ItemsEvent",
                name,
                service=service,
                node=node,
                kind=kind,
                items=[json_item(item) for item in items],
            )
        )
        await client.on_sync_state_changed(
            lambda name, service, node, state: show(
                "SyncStateChanged", name, service=service, node=node, state=state
            )
        )
        await client.on_sync_progress(
            lambda name, service, node, done, total: show(
                "SyncProgress", name, service=service, node=node, done=done, total=total
            )
        )
        print(READY_LINE, file=sys.stderr, flush=True)
        stopped = asyncio.ensure_future(stop.wait())
        # dbus-fast leaves this one unannotated.
        lost = asyncio.ensure_future(client.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        try:
            await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopped, lost):
                task.cancel()
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
        if lost.done() and not lost.cancelled():
            failure = lost.exception()
            if not stop.is_set():
                why = f" ({failure})" if failure else ""
                raise CommandError(
                    f"the connection to the bus was lost{why}", ExitCode.DAEMON_NOT_RUNNING
                )

    try:
        run_with_client(options, body)
    except SystemExit as exc:
        # Interrupted before the handlers were in place: still the way watching ends.
        if exc.code == int(ExitCode.INTERRUPTED):
            raise SystemExit(0) from None
        raise
