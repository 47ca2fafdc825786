"""RosterStore and CacheSubscriptionStore on a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import text

from roost.storage import (
    CacheSubscriptionRecord,
    Database,
    RosterEntry,
    RosterRemoval,
    RowNotFound,
    SubscriptionRequestRecord,
)

SERVICE = "pubsub.example.org"
ALICE = RosterEntry("alice@example.org", "Alice", ("Friends", "Work"), "both")
BOB = RosterEntry("bob@example.org", subscription="to", pending_out=True)
CAROL = RosterEntry("carol@example.org", "Carol", ("Friends",), "from")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.open(database_url)
    await database.profiles.create_profile("p", "p@example.org", "x", {})
    await database.profiles.create_profile("q", "q@example.org", "x", {})
    yield database
    await database.close()


async def _count(db: Database, table: str) -> int:
    async with db.engine.connect() as conn:
        count = (await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar()
    return int(count or 0)


async def _updated(db: Database, jid: str) -> float:
    async with db.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT updated FROM roster_items WHERE jid = :jid"), {"jid": jid}
            )
        ).scalar()
    assert value is not None
    return float(value)


# --- rosters ------------------------------------------------------------------------------


async def test_a_profile_without_a_roster_has_no_version_and_no_contacts(db: Database) -> None:
    assert await db.roster.get_roster("p") == (None, [])
    assert await db.roster.load_rosters() == {}


async def test_replace_stores_exactly_the_entries_sorted_by_jid(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [CAROL, ALICE, BOB])
    assert await db.roster.get_roster("p") == ("v1", [ALICE, BOB, CAROL])

    await db.roster.replace_roster("p", "v2", [BOB, RosterEntry("dave@example.org")])
    version, entries = await db.roster.get_roster("p")
    assert version == "v2"
    assert entries == [BOB, RosterEntry("dave@example.org", "", (), "none", False)]
    assert await _count(db, "roster_items") == 2


async def test_replace_with_no_version_clears_the_stored_one(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE])
    await db.roster.replace_roster("p", None, [ALICE])
    assert await db.roster.get_roster("p") == (None, [ALICE])


async def test_replace_with_nothing_empties_the_roster(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE, BOB])
    await db.roster.replace_roster("p", "v2", [])
    assert await db.roster.get_roster("p") == ("v2", [])


async def test_replace_keeps_the_last_of_two_entries_with_one_jid(db: Database) -> None:
    renamed = RosterEntry(ALICE.jid, "Alice B.")
    await db.roster.replace_roster("p", None, [ALICE, renamed])
    assert await db.roster.get_roster("p") == (None, [renamed])


async def test_replace_rewrites_only_the_entries_that_changed(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE, BOB])
    alice_written, bob_written = await _updated(db, ALICE.jid), await _updated(db, BOB.jid)
    # The clock must move for a rewrite to show in ``updated``: time passing is the point.
    await asyncio.sleep(0.01)
    moved = RosterEntry(BOB.jid, "Bob", ("Work",), "both")
    await db.roster.replace_roster("p", "v2", [ALICE, moved])
    assert await _updated(db, ALICE.jid) == alice_written
    assert await _updated(db, BOB.jid) > bob_written
    assert (await db.roster.get_roster("p"))[1] == [ALICE, moved]


async def test_upsert_adds_then_changes_a_contact_leaving_the_others(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE, BOB])
    await db.roster.upsert_contact("p", CAROL, "v2")
    answered = RosterEntry(BOB.jid, subscription="both")
    await db.roster.upsert_contact("p", answered, "v3")
    assert await db.roster.get_roster("p") == ("v3", [ALICE, answered, CAROL])


async def test_upsert_without_a_version_leaves_the_stored_one(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE])
    await db.roster.upsert_contact("p", BOB)
    assert await db.roster.get_roster("p") == ("v1", [ALICE, BOB])


async def test_upsert_on_an_empty_roster_without_a_version_stores_none(db: Database) -> None:
    await db.roster.upsert_contact("p", BOB)
    assert await db.roster.get_roster("p") == (None, [BOB])
    assert await db.roster.load_rosters() == {"p": (None, [BOB])}


async def test_groups_given_as_a_list_read_back_as_a_tuple(db: Database) -> None:
    listed = RosterEntry("erin@example.org", groups=["B", "A"])  # type: ignore[arg-type]
    await db.roster.upsert_contact("p", listed)
    (entry,) = (await db.roster.get_roster("p"))[1]
    assert entry.groups == ("B", "A")
    assert entry == RosterEntry("erin@example.org", groups=("B", "A"))


async def test_remove_reports_whether_the_contact_was_there(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE, BOB])
    assert await db.roster.remove_contact("p", ALICE.jid, "v2") is True
    assert await db.roster.get_roster("p") == ("v2", [BOB])
    assert await db.roster.remove_contact("p", ALICE.jid, "v3") is False
    # The push's version is stored even when the contact was already gone.
    assert await db.roster.get_roster("p") == ("v3", [BOB])
    assert await db.roster.remove_contact("p", BOB.jid) is True
    assert await db.roster.get_roster("p") == ("v3", [])


async def test_changes_of_several_pushes_are_stored_in_order_in_one_call(db: Database) -> None:
    """A burst of pushes stored at once ends as the same pushes one by one would leave
    the roster: a contact added and removed within it is not there, one removed and
    added again is, with its last state."""
    await db.roster.replace_roster("p", "v1", [ALICE, BOB])
    before = await _updated(db, BOB.jid)
    alice_again = RosterEntry(ALICE.jid, "Alice again", ("Home",), "to")
    found = await db.roster.apply_changes(
        "p",
        [
            CAROL,
            RosterRemoval(CAROL.jid),
            RosterRemoval(ALICE.jid),
            RosterEntry(ALICE.jid, "Alice", (), "none"),
            alice_again,
            RosterRemoval("nobody@example.org"),
            BOB,  # unchanged: its row is left alone
        ],
        "v9",
    )
    assert found == [False, True, True, False, True, False, True]
    assert await db.roster.get_roster("p") == ("v9", [alice_again, BOB])
    assert await _updated(db, BOB.jid) == before
    assert await db.roster.apply_changes("p", []) == []
    assert await db.roster.get_roster("p") == ("v9", [alice_again, BOB])


async def test_a_refused_change_stores_none_of_its_batch(db: Database) -> None:
    await db.roster.replace_roster("p", "v1", [ALICE])
    with pytest.raises(ValueError, match="bogus"):
        await db.roster.apply_changes(
            "p", [RosterRemoval(ALICE.jid), RosterEntry(BOB.jid, subscription="bogus")], "v2"
        )
    assert await db.roster.get_roster("p") == ("v1", [ALICE])


async def test_rosters_are_per_profile(db: Database) -> None:
    await db.roster.replace_roster("p", "vp", [ALICE, BOB])
    await db.roster.replace_roster("q", "vq", [ALICE])
    await db.roster.remove_contact("q", ALICE.jid)
    assert await db.roster.get_roster("p") == ("vp", [ALICE, BOB])
    assert await db.roster.get_roster("q") == ("vq", [])


async def test_load_rosters_gives_every_profile_with_a_version_or_contacts(
    db: Database,
) -> None:
    await db.profiles.create_profile("r", "r@example.org", "x", {})
    await db.profiles.create_profile("s", "s@example.org", "x", {})
    await db.roster.replace_roster("q", "vq", [CAROL, ALICE])
    await db.roster.replace_roster("p", "vp", [])  # a version, no contacts
    await db.roster.upsert_contact("r", BOB)  # contacts, no version
    assert await db.roster.load_rosters() == {
        "p": ("vp", []),
        "q": ("vq", [ALICE, CAROL]),
        "r": (None, [BOB]),
    }


async def test_an_unknown_subscription_state_is_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="remove"):
        await db.roster.upsert_contact("p", RosterEntry(ALICE.jid, subscription="remove"))
    with pytest.raises(ValueError, match="bogus"):
        await db.roster.replace_roster("p", "v1", [BOB, RosterEntry("x@y", subscription="bogus")])
    assert await db.roster.get_roster("p") == (None, [])


async def test_groups_that_are_not_strings_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="groups"):
        await db.roster.upsert_contact("p", RosterEntry(ALICE.jid, groups="Friends"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups"):
        await db.roster.upsert_contact("p", RosterEntry(ALICE.jid, groups=(1,)))  # type: ignore[arg-type]
    assert await db.roster.get_roster("p") == (None, [])


async def test_concurrent_pushes_of_one_contact_leave_one_row(db: Database) -> None:
    await asyncio.gather(
        *(
            db.roster.upsert_contact("p", RosterEntry(ALICE.jid, f"name {n}"), f"v{n}")
            for n in range(8)
        )
    )
    version, entries = await db.roster.get_roster("p")
    assert len(entries) == 1
    assert version is not None and entries[0].name == f"name {version[1:]}"
    assert await _count(db, "rosters") == 1


async def test_a_cancelled_replace_is_all_or_nothing(db: Database) -> None:
    entries = [RosterEntry(f"c{n:05d}@example.org", groups=("G",)) for n in range(5000)]
    write = asyncio.create_task(db.roster.replace_roster("p", "big", entries))
    # Any moment is a valid one to cancel at (the outcome must be all or nothing either
    # way): this only lets the write begin its transaction first, most of the time.
    await asyncio.sleep(0.01)
    if write.cancel():
        with pytest.raises(asyncio.CancelledError):
            await write
    else:
        await write  # it ended before the cancellation could reach it
    # The call finished its transaction before the cancellation was seen: the database
    # is writable, and holds the whole roster or none of it.
    await db.roster.upsert_contact("q", ALICE)
    version, stored = await db.roster.get_roster("p")
    assert (version, len(stored)) in {(None, 0), ("big", 5000)}


# --- subscription requests ---------------------------------------------------------------


async def test_requests_are_listed_oldest_first(db: Database) -> None:
    assert await db.roster.add_subscription_request("p", "b@example.org", "", 20.0) is True
    assert await db.roster.add_subscription_request("p", "a@example.org", "hi", 10.0) is True
    assert await db.roster.add_subscription_request("p", "c@example.org", "", 30.0) is True
    assert await db.roster.list_subscription_requests("p") == [
        SubscriptionRequestRecord("a@example.org", "hi", 10.0),
        SubscriptionRequestRecord("b@example.org", "", 20.0),
        SubscriptionRequestRecord("c@example.org", "", 30.0),
    ]
    assert await db.roster.list_subscription_requests("q") == []


async def test_a_repeated_request_keeps_its_time_and_takes_the_new_message(
    db: Database,
) -> None:
    assert await db.roster.add_subscription_request("p", "a@example.org", "first", 10.0)
    assert await db.roster.add_subscription_request("p", "b@example.org", "", 20.0)
    assert not await db.roster.add_subscription_request("p", "a@example.org", "again", 99.0)
    assert await db.roster.list_subscription_requests("p") == [
        SubscriptionRequestRecord("a@example.org", "again", 10.0),
        SubscriptionRequestRecord("b@example.org", "", 20.0),
    ]


async def test_concurrent_requests_from_one_jid_count_as_new_once(db: Database) -> None:
    results = await asyncio.gather(
        *(
            db.roster.add_subscription_request("p", "a@example.org", f"m{n}", float(n))
            for n in range(8)
        )
    )
    assert results.count(True) == 1
    assert len(await db.roster.list_subscription_requests("p")) == 1


async def test_delete_request_reports_whether_it_was_waiting(db: Database) -> None:
    await db.roster.add_subscription_request("p", "a@example.org", "", 1.0)
    await db.roster.add_subscription_request("q", "a@example.org", "", 1.0)
    assert await db.roster.delete_subscription_request("p", "a@example.org") is True
    assert await db.roster.delete_subscription_request("p", "a@example.org") is False
    assert await db.roster.list_subscription_requests("p") == []
    assert [r.jid for r in await db.roster.list_subscription_requests("q")] == ["a@example.org"]


# --- the cache's subscriptions -----------------------------------------------------------


async def test_record_then_list_a_subscription(db: Database) -> None:
    before = time.time()
    await db.cache_subscriptions.record_subscription("p", SERVICE, "blog", "sub-1")
    (record,) = await db.cache_subscriptions.list_subscriptions()
    assert (record.profile, record.service, record.node, record.subid) == (
        "p",
        SERVICE,
        "blog",
        "sub-1",
    )
    assert before <= record.created <= time.time()


async def test_recording_again_takes_the_subid_and_keeps_created(db: Database) -> None:
    await db.cache_subscriptions.record_subscription("p", SERVICE, "blog", "sub-1")
    (first,) = await db.cache_subscriptions.list_subscriptions("p")
    # The clock moves, so that a ``created`` rewritten would show.
    await asyncio.sleep(0.01)
    await db.cache_subscriptions.record_subscription("p", SERVICE, "blog", "sub-2")
    assert await db.cache_subscriptions.list_subscriptions("p") == [
        CacheSubscriptionRecord("p", SERVICE, "blog", "sub-2", first.created)
    ]


async def test_list_filters_by_profile_service_and_node(db: Database) -> None:
    other = "other.example.org"
    for profile, service, node in [
        ("q", SERVICE, "blog"),
        ("p", other, "blog"),
        ("p", SERVICE, "news"),
        ("p", SERVICE, "blog"),
    ]:
        await db.cache_subscriptions.record_subscription(profile, service, node, "")

    def keys(records: list[CacheSubscriptionRecord]) -> list[tuple[str, str, str]]:
        return [(r.profile, r.service, r.node) for r in records]

    listed = db.cache_subscriptions.list_subscriptions
    assert keys(await listed()) == [
        ("p", other, "blog"),
        ("p", SERVICE, "blog"),
        ("p", SERVICE, "news"),
        ("q", SERVICE, "blog"),
    ]
    assert keys(await listed("q")) == [("q", SERVICE, "blog")]
    assert keys(await listed(service=other)) == [("p", other, "blog")]
    assert keys(await listed(node="blog")) == [
        ("p", other, "blog"),
        ("p", SERVICE, "blog"),
        ("q", SERVICE, "blog"),
    ]
    assert keys(await listed("p", SERVICE, "blog")) == [("p", SERVICE, "blog")]
    assert keys(await listed("q", other)) == []


async def test_forget_reports_whether_it_was_recorded(db: Database) -> None:
    await db.cache_subscriptions.record_subscription("p", SERVICE, "blog", "sub-1")
    await db.cache_subscriptions.record_subscription("q", SERVICE, "blog", "sub-2")
    assert await db.cache_subscriptions.forget_subscription("p", SERVICE, "blog") is True
    assert await db.cache_subscriptions.forget_subscription("p", SERVICE, "blog") is False
    assert [r.profile for r in await db.cache_subscriptions.list_subscriptions()] == ["q"]


async def test_concurrent_records_of_one_subscription_leave_one_row(db: Database) -> None:
    await asyncio.gather(
        *(
            db.cache_subscriptions.record_subscription("p", SERVICE, "blog", f"s{n}")
            for n in range(8)
        )
    )
    assert len(await db.cache_subscriptions.list_subscriptions()) == 1


# --- profiles ----------------------------------------------------------------------------


async def test_an_unknown_profile_is_row_not_found(db: Database) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: db.roster.get_roster("nobody"),
        lambda: db.roster.replace_roster("nobody", "v", [ALICE]),
        lambda: db.roster.upsert_contact("nobody", ALICE, "v"),
        lambda: db.roster.remove_contact("nobody", ALICE.jid, "v"),
        lambda: db.roster.add_subscription_request("nobody", ALICE.jid, "", 1.0),
        lambda: db.roster.list_subscription_requests("nobody"),
        lambda: db.roster.delete_subscription_request("nobody", ALICE.jid),
        lambda: db.cache_subscriptions.record_subscription("nobody", SERVICE, "blog", ""),
        lambda: db.cache_subscriptions.list_subscriptions("nobody"),
        lambda: db.cache_subscriptions.forget_subscription("nobody", SERVICE, "blog"),
    ]
    for call in calls:
        with pytest.raises(RowNotFound, match="nobody"):
            await call()
    for table in ("rosters", "roster_items", "subscription_requests", "cache_subscriptions"):
        assert await _count(db, table) == 0, table


async def test_deleting_a_profile_removes_its_contacts_and_subscriptions(db: Database) -> None:
    for profile in ("p", "q"):
        await db.roster.replace_roster(profile, f"v-{profile}", [ALICE, BOB])
        await db.roster.add_subscription_request(profile, CAROL.jid, profile, 1.0)
        await db.cache_subscriptions.record_subscription(profile, SERVICE, "blog", profile)

    await db.profiles.delete_profile("p")

    assert await db.roster.load_rosters() == {"q": ("v-q", [ALICE, BOB])}
    assert await db.roster.list_subscription_requests("q") == [
        SubscriptionRequestRecord(CAROL.jid, "q", 1.0)
    ]
    assert [r.profile for r in await db.cache_subscriptions.list_subscriptions()] == ["q"]
    assert await _count(db, "rosters") == 1
    assert await _count(db, "roster_items") == 2
    assert await _count(db, "subscription_requests") == 1
    assert await _count(db, "cache_subscriptions") == 1
    with pytest.raises(RowNotFound):
        await db.roster.get_roster("p")
