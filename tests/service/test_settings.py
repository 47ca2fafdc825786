"""SettingsService: scopes, limits, and refusals that change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from roost.service import settings as settings_module
from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.errors import Forbidden, InvalidArgument, NotFound
from roost.service.events import Event, ParamChanged
from roost.service.settings import GLOBAL, MAX_KEYS_PER_NAMESPACE, MAX_VALUE_BYTES


@pytest.fixture
async def backend(sqlite_url: str) -> AsyncIterator[Backend]:
    backend = await Backend.open(Config(), sqlite_url)
    await backend.profiles.create("me", "me@example.org", "pw", {})
    yield backend
    await backend.close()


async def test_params_scopes_and_event(backend: Backend) -> None:
    events: list[Event] = []
    backend.events.subscribe(events.append)
    await backend.settings.set_param("", "ui", "theme", "dark")
    await backend.settings.set_param(GLOBAL, "ui", "theme", "light")
    assert await backend.settings.get_param("me", "ui", "theme") == "dark"
    assert await backend.settings.get_param(GLOBAL, "ui", "theme") == "light"
    assert await backend.settings.list_params("me", "ui") == {"theme": "dark"}
    assert events == [
        ParamChanged("me", "ui", "theme", "dark"),
        ParamChanged(GLOBAL, "ui", "theme", "light"),
    ]


@pytest.mark.parametrize(
    ("category", "name", "value", "says"),
    [
        ("", "n", "v", "category is empty"),
        ("c", "", "v", "parameter name is empty"),
        ("c" * 256, "n", "v", "longer than 255"),
        ("c", "n\n", "v", "non-printable"),
        ("c", "n", "v" * 65537, "longer than 65536"),
        ("c", "n", "a\x00b", "NUL"),
    ],
)
async def test_param_limits(
    backend: Backend, category: str, name: str, value: str, says: str
) -> None:
    with pytest.raises(InvalidArgument, match=says):
        await backend.settings.set_param("me", category, name, value)
    assert await backend.settings.list_params("me", category[:255] or "c") == {}


async def test_values(backend: Backend) -> None:
    await backend.settings.set_value("me", "ns", "k", "a{sv}", [["x", ["i", 1]]])
    assert await backend.settings.get_values("me", "ns", []) == {"k": ("a{sv}", [["x", ["i", 1]]])}
    assert await backend.settings.get_values(GLOBAL, "ns", ["k"]) == {}
    await backend.settings.delete_value("me", "ns", "k")
    with pytest.raises(NotFound):
        await backend.settings.delete_value("me", "ns", "k")
    with pytest.raises(NotFound, match="no profile named 'ghost'"):
        await backend.settings.get_values("ghost", "ns", [])


async def test_value_limits(backend: Backend) -> None:
    with pytest.raises(InvalidArgument, match="more than the"):
        await backend.settings.set_value("me", "ns", "k", "s", "x" * MAX_VALUE_BYTES)
    with pytest.raises(Forbidden, match="reserves"):
        await backend.settings.set_value("me", "@ns", "k", "s", "x")
    with pytest.raises(Forbidden, match="without a leading '@'"):
        await backend.settings.set_param("me", "@roost", "n", "v")
    with pytest.raises(InvalidArgument, match="at most"):
        await backend.settings.get_values("me", "ns", ["k"] * (MAX_KEYS_PER_NAMESPACE + 1))
    assert await backend.settings.get_values("me", "ns", []) == {}


async def test_a_namespace_holds_a_bounded_number_of_keys(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real bound (1024) behaves the same; a small one keeps the test quick.
    monkeypatch.setattr(settings_module, "MAX_KEYS_PER_NAMESPACE", 20)
    for index in range(20):
        await backend.settings.set_value(GLOBAL, "full", f"k{index}", "i", index)
    with pytest.raises(InvalidArgument, match="delete some first"):
        await backend.settings.set_value(GLOBAL, "full", "one-more", "i", 0)
    # Replacing an existing key is still allowed.
    await backend.settings.set_value(GLOBAL, "full", "k0", "i", -1)
    assert (await backend.settings.get_values(GLOBAL, "full", ["k0"]))["k0"] == ("i", -1)


async def test_racing_writes_to_one_namespace_keep_its_bound(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "MAX_KEYS_PER_NAMESPACE", 20)
    writes = [backend.settings.set_value("me", "race", f"k{n}", "i", n) for n in range(30)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    refused = [r for r in results if isinstance(r, InvalidArgument)]
    assert len(refused) == 10 and all(r is None or r in refused for r in results)
    assert len(await backend.settings.get_values("me", "race", [])) == 20


async def test_a_slow_write_holds_up_only_its_own_namespace(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each frontend keeps its values in a namespace of its own: one frontend's write
    waiting on the database must not queue another's."""
    store = backend.db.values
    write = store.set_value
    entered = asyncio.Event()
    release = asyncio.Event()

    async def held_in_slow(owner: str | None, namespace: str, *args: object) -> None:
        if namespace == "slow":
            entered.set()
            await release.wait()
        await write(owner, namespace, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "set_value", held_in_slow)
    slow = asyncio.ensure_future(backend.settings.set_value("me", "slow", "k", "i", 1))
    await asyncio.wait_for(entered.wait(), 30)
    # Within a generous bound: it fails only if it waits for the slow write's release.
    await asyncio.wait_for(backend.settings.set_value("me", "fast", "k", "i", 2), 30)
    assert await backend.settings.get_values("me", "fast", []) == {"k": ("i", 2)}
    assert not slow.done()
    release.set()
    await slow
    assert await backend.settings.get_values("me", "slow", []) == {"k": ("i", 1)}
