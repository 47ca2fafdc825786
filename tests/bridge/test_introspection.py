"""The introspection XML in data/ is what the running daemon introspects."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType

from roost.bridge.client import RoostClient
from roost.bridge.constants import BUS_NAME, OBJECT_PATH
from roost.bridge.server import INTERFACES

pytestmark = pytest.mark.dbus

DATA = Path(__file__).parents[2] / "data"
STANDARD = {
    "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.Peer",
    "org.freedesktop.DBus.Properties",
    "org.freedesktop.DBus.ObjectManager",
}


def canonical(interface: ET.Element) -> Any:
    """An interface's members as comparable data: order of members aside, args in order."""

    def args(member: ET.Element) -> list[tuple[str, str, str]]:
        return [
            (arg.get("name", ""), arg.get("type", ""), arg.get("direction", ""))
            for arg in member.findall("arg")
        ]

    return {
        "methods": sorted((m.get("name"), args(m)) for m in interface.findall("method")),
        "signals": sorted((s.get("name"), args(s)) for s in interface.findall("signal")),
        "properties": sorted(
            (p.get("name"), p.get("type"), p.get("access")) for p in interface.findall("property")
        ),
    }


async def live_interfaces(client: RoostClient) -> dict[str, ET.Element]:
    reply = await client.bus.call(
        Message(
            destination=BUS_NAME,
            path=OBJECT_PATH,
            interface="org.freedesktop.DBus.Introspectable",
            member="Introspect",
        )
    )
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
    node = ET.fromstring(reply.body[0])
    return {i.get("name", ""): i for i in node.findall("interface")}


async def test_every_exported_interface_has_its_file_and_matches(
    roost_client: RoostClient,
) -> None:
    live = await live_interfaces(roost_client)
    ours = {name: element for name, element in live.items() if name not in STANDARD}
    assert len(ours) == len(INTERFACES)
    for name, element in ours.items():
        path = DATA / f"{name}.xml"
        assert path.exists(), f"{path.name} is missing from data/"
        stored = ET.parse(path).getroot().findall("interface")
        assert [i.get("name") for i in stored] == [name], f"{path.name} holds other interfaces"
        assert canonical(stored[0]) == canonical(element), (
            f"{path.name} differs from what the daemon exports: update the file"
        )


def test_no_file_describes_an_interface_that_is_not_exported() -> None:
    class _Events:
        @staticmethod
        def subscribe(_listener: object) -> Any:
            return lambda: None

    class _Backend:
        version = "0"
        events = _Events()

    exported = {make(_Backend()).name for make in INTERFACES}  # type: ignore[arg-type]
    files = {path.name.removesuffix(".xml") for path in DATA.glob("org.roost.*.xml")}
    assert files == exported


async def test_no_member_hands_out_a_password(roost_client: RoostClient) -> None:
    for name, element in (await live_interfaces(roost_client)).items():
        outputs = [
            arg.get("name", "")
            for member in [*element.findall("method"), *element.findall("signal")]
            for arg in member.findall("arg")
            if arg.get("direction") != "in"
        ] + [prop.get("name", "") for prop in element.findall("property")]
        assert not any("password" in out.lower() for out in outputs), name
