"""The in-memory namespace cache: bounded, and never out of step with the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from roost.service.backend import Backend
from roost.service.config import Config
from roost.service.settings import GLOBAL
from roost.service.value_cache import ValueCache


def test_least_recently_used_namespaces_go_first() -> None:
    cache = ValueCache(max_bytes=100)
    cache.put(None, "a", {"k": ("s", "x" * 30)})
    cache.put(None, "b", {"k": ("s", "y" * 30)})
    assert cache.get(None, "a") is not None  # a is now the most recently used
    cache.put("p", "c", {"k": ("s", "z" * 30)})
    assert cache.get(None, "b") is None
    assert cache.get(None, "a") is not None and cache.get("p", "c") is not None
    assert cache.total_bytes <= 100
    cache.forget_owner("p")
    assert cache.get("p", "c") is None


def test_a_namespace_larger_than_the_budget_is_not_held() -> None:
    cache = ValueCache(max_bytes=10)
    cache.put(None, "a", {"k": ("s", "x" * 30)})
    assert cache.get(None, "a") is None
    assert cache.total_bytes == 0


def test_writes_keep_the_size_account() -> None:
    cache = ValueCache()
    cache.put(None, "a", {})
    cache.set(None, "a", "k", "s", "value")
    grown = cache.total_bytes
    assert grown > 0
    cache.delete(None, "a", "k")
    assert cache.total_bytes == 0
    assert cache.get(None, "a") == {}


@pytest.fixture
async def backend(sqlite_url: str) -> AsyncIterator[Backend]:
    backend = await Backend.open(Config(), sqlite_url)
    yield backend
    await backend.close()


async def test_concurrent_reads_and_writes_end_as_the_database(
    backend: Backend, sqlite_url: str
) -> None:
    async def write(index: int) -> None:
        await backend.settings.set_value(GLOBAL, "ns", f"k{index % 7}", "i", index)

    async def read() -> None:
        await backend.settings.get_values(GLOBAL, "ns", [])

    await asyncio.gather(*(write(i) if i % 2 else read() for i in range(200)))
    from_memory = await backend.settings.get_values(GLOBAL, "ns", [])
    fresh = await Backend.open(Config(), sqlite_url)
    try:
        assert await fresh.settings.get_values(GLOBAL, "ns", []) == from_memory
    finally:
        await fresh.close()


async def test_a_recreated_profile_does_not_see_old_values(backend: Backend) -> None:
    await backend.profiles.create("me", "me@example.org", "pw", {})
    await backend.settings.set_value("me", "ns", "k", "s", "old")
    assert await backend.settings.get_values("me", "ns", ["k"]) == {"k": ("s", "old")}
    await backend.delete_profile("me")
    await backend.profiles.create("me", "me@example.org", "pw", {})
    assert await backend.settings.get_values("me", "ns", []) == {}
