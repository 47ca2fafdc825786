"""Fill an ejabberd pubsub node with many items fast, by writing its mnesia records.

Publishing over XMPP costs ejabberd time in proportion to the node's size: every publish
rewrites the publisher's ``pubsub_state`` record, whose ``items`` field lists every item
id the publisher has in the node, and adds to mnesia's index entry of the node, which
lists every item of the node. Filling 100,000 items that way takes many minutes.

:func:`fill_ejabberd_node` instead starts a hidden Erlang node that connects to the
running ejabberd (same Erlang, same cookie, same distribution port as ``ejabberdctl``)
and has ejabberd itself parse each payload with ``fxml_stream`` and write the records a
publish of ``node_flat`` (ejabberd 23.01, mnesia backend) would write:

* one ``pubsub_item`` per item, with a creation time one microsecond after the previous
  one, so the items keep their publication order (ejabberd sorts a node's items by
  creation time and pages them with RSM on that time), and the publisher as a publish
  sets it;
* the publisher's ``pubsub_state``, its ``items`` list extended newest first, so that
  retracting, purging or deleting the node later works as after real publishes;
* the last-item cache entry, when mod_pubsub's ``last_item_cache`` is on.

Meanwhile the item table's node index is dropped, and rebuilt in one pass at the end
(see ``Index`` below): while the fill runs, ejabberd cannot answer pubsub queries.
Nothing is cached elsewhere in mod_pubsub for the mnesia backend, so ejabberd serves the
items over XMPP as soon as the fill returns, and after a restart too. Run this module
to check all of that on a fresh server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roost.service.pubsub.model import PubsubItem
from tests.fixtures.xmpp import EjabberdServer, free_port

CHUNK = 5_000  # items per call into ejabberd: few calls, yet small messages
TIMEOUT = 600.0

# The Erlang side, evaluated by the helper node (``erl -eval``). Its arguments come after
# ``-extra``: ejabberd's node name, the pubsub service, the node, the publisher's JID,
# the items file, the ids file and the item count (see ItemFiles). Its funs are sent to
# ejabberd and run there, so ejabberd's own fxml parses the payloads and its own mnesia
# writes the records. It prints the number of items written; a failure goes to stderr,
# with exit status 1.
ERLANG = r"""
Main = fun() ->
    [Target, Service0, Node0, Jid0, ItemsFile, IdsFile, TotalText] = init:get_plain_arguments(),
    Server = list_to_atom(Target),
    [Service, NodeName, Jid] = [unicode:characters_to_binary(S) || S <- [Service0, Node0, Jid0]],
    Total = list_to_integer(TotalText),
    case net_kernel:connect_node(Server) of
        true -> ok;
        _ -> erlang:error({cannot_connect, Server})
    end,
    Call = fun(Fun, Args) -> erpc:call(Server, erlang, apply, [Fun, Args], infinity) end,
    Prepare = fun(Svc, Name, PublisherJid) ->
        % Fail loudly on another record layout than the one written below.
        Layouts = [{pubsub_node, [nodeid, id, parents, type, owners, options]},
                   {pubsub_item, [itemid, nodeidx, creation, modification, payload]},
                   {pubsub_state, [stateid, nodeidx, items, affiliation, subscriptions]}],
        lists:foreach(
            fun({Table, Fields}) ->
                case catch mnesia:table_info(Table, attributes) of
                    Fields -> ok;
                    Other -> erlang:error({unexpected_table_layout, Table, Other})
                end
            end, Layouts),
        {Nidx, Options} = case mnesia:dirty_read(pubsub_node, {Svc, Name}) of
            [{pubsub_node, _, Idx, _, _, _, Opts}] -> {Idx, Opts};
            _ -> erlang:error({no_such_node, Svc, Name})
        end,
        % What mod_pubsub:max_items/2 allows; beyond it a publish would drop old items.
        Max = case {proplists:get_value(persist_items, Options, true),
                    proplists:get_value(max_items, Options)} of
            {false, _} -> 0;
            {_, I} when is_integer(I) -> I;
            _ -> mod_pubsub:config(Svc, max_items_node, 1000)
        end,
        Existing = length(mnesia:dirty_index_read(pubsub_item, Nidx, nodeidx)),
        SubKey = jid:tolower(jid:decode(PublisherJid)),
        {Nidx, SubKey, jid:remove_resource(SubKey), Max - Existing,
         erlang:system_time(microsecond)}
    end,
    % mnesia indexes pubsub_item by node (record position 3) in a bag, and each write
    % scans every entry of the item's node there: that makes each publish cost O(node
    % size). Without the index a write costs the same at any size; adding the index back
    % builds it in one pass over the table.
    Index = fun(Op) ->
        case lists:member(3, mnesia:table_info(pubsub_item, index)) of
            true when Op == drop -> {atomic, ok} = mnesia:del_table_index(pubsub_item, nodeidx);
            false when Op == add ->
                {atomic, ok} = mnesia:add_table_index(pubsub_item, nodeidx),
                % Left in the transaction log, the two index changes are replayed at the
                % next start and the table comes up with its index listed twice; ejabberd
                % then deletes the "extra" one and runs without an index (every pubsub
                % query fails). Dumping the log now keeps them out of the replay.
                dumped = mnesia:dump_log();
            _ -> ok
        end
    end,
    % One chunk: a term_to_binary list of {Id, Xml}, the first created at First.
    Write = fun(Nidx, SubKey, GenKey, First, Chunk) ->
        Last = lists:foldl(
            fun({Id, Xml}, Stamp) ->
                Payload = case fxml_stream:parse_element(Xml) of
                    {error, Why} -> erlang:error({bad_payload, Id, Why});
                    El -> [El]
                end,
                Now = {Stamp div 1000000000000, Stamp div 1000000 rem 1000000,
                       Stamp rem 1000000},
                mnesia:dirty_write({pubsub_item, {Id, Nidx}, Nidx, {Now, GenKey},
                                    {Now, SubKey}, Payload}),
                Stamp + 1
            end, First, binary_to_term(Chunk)),
        Last - First
    end,
    Finish = fun(Svc, Nidx, GenKey, NewestFirst, Next) ->
        AddIds = fun() ->
            State = case mnesia:read({pubsub_state, {GenKey, Nidx}}) of
                [S] -> S;
                [] -> {pubsub_state, {GenKey, Nidx}, Nidx, [], none, []}
            end,
            mnesia:write(setelement(4, State, NewestFirst ++ element(4, State)))
        end,
        {atomic, ok} = mnesia:transaction(AddIds),
        case mod_pubsub:config(Svc, last_item_cache, false) of
            true ->
                [{pubsub_item, {LastId, _}, _, {_, Owner}, _, LastPayload}] =
                    mnesia:dirty_read(pubsub_item, {hd(NewestFirst), Nidx}),
                mnesia:dirty_write({pubsub_last_item, {Svc, Nidx}, LastId,
                                    {erlang:timestamp(), Owner}, LastPayload});
            _ -> ok
        end,
        % The last creation time may lie a little ahead (one microsecond per item from
        % the start); wait it out so that a later publish sorts after every item.
        timer:sleep(max(0, (Next - erlang:system_time(microsecond)) div 1000 + 1))
    end,
    {Nidx, SubKey, GenKey, Room, Start} = Call(Prepare, [Service, NodeName, Jid]),
    if
        Total > Room -> erlang:error({too_many_items, Total, room_for, Room});
        true -> ok
    end,
    {ok, Items} = file:read_file(ItemsFile),
    {ok, Ids} = file:read_file(IdsFile),
    % Two chunks in flight: ejabberd parses one while its table writes the other.
    Send = fun(Offset, Chunk) ->
        erpc:send_request(Server, erlang, apply,
                          [Write, [Nidx, SubKey, GenKey, Start + Offset, Chunk]])
    end,
    Wait = fun(Requests) -> lists:sum([erpc:receive_response(R, infinity) || R <- Requests]) end,
    Loop = fun Loop(<<N:32, L:32, Chunk:L/binary, Rest/binary>>, Offset, Pending, Done) ->
                   Request = Send(Offset, Chunk),
                   Loop(Rest, Offset + N, [Request], Done + Wait(Pending));
               Loop(<<>>, _, Pending, Done) ->
                   Done + Wait(Pending)
           end,
    Call(Index, [drop]),
    Count = try Loop(Items, 0, [], 0) after Call(Index, [add]) end,
    if
        Count /= Total -> erlang:error({written, Count, of_items, Total});
        Count > 0 -> Call(Finish, [Service, Nidx, GenKey, binary_to_term(Ids), Start + Count]);
        true -> ok
    end,
    Count
end,
try Main() of
    Written -> io:format("~b~n", [Written]), halt(0)
catch
    Class:Reason:Stack ->
        io:format(standard_error, "~p~n", [{Class, Reason, Stack}]),
        halt(1)
end.
"""


# Erlang's external term format, the little of it the files need: ejabberd decodes a
# chunk with one binary_to_term call instead of splitting it item by item in the
# (interpreted) helper code.
def _term_binary(data: bytes) -> bytes:
    return b"m" + struct.pack(">I", len(data)) + data


def _term_list(elements: list[bytes]) -> bytes:
    if not elements:
        return b"j"
    return b"l" + struct.pack(">I", len(elements)) + b"".join(elements) + b"j"


def _term(encoded: bytes) -> bytes:
    return b"\x83" + encoded


@dataclass(frozen=True)
class ItemFiles:
    """The items as the helper node reads them.

    ``items``: chunks, each its item count, its length and a term of [{Id, Xml}];
    ``ids``: a term of every id, newest first (the order of a pubsub_state's items).
    """

    items: Path
    ids: Path
    count: int


def _write_items(directory: Path, payloads: Iterable[tuple[str, str]]) -> ItemFiles:
    """Write ``payloads`` in CHUNK-item chunks and their ids to files in ``directory``."""
    items, ids_file = directory / "items", directory / "ids"
    ids: list[bytes] = []
    seen: set[bytes] = set()
    with items.open("wb") as out:
        chunk: list[bytes] = []

        def flush() -> None:
            term = _term(_term_list(chunk))
            out.write(struct.pack(">II", len(chunk), len(term)) + term)
            chunk.clear()

        for item_id, xml in payloads:
            key = item_id.encode()
            if key in seen:
                # A second write of an id would replace the first, not add an item.
                raise ValueError(f"item id {item_id!r} is given twice")
            seen.add(key)
            ids.append(key)
            chunk.append(b"h\x02" + _term_binary(key) + _term_binary(xml.encode()))
            if len(chunk) == CHUNK:
                flush()
        if chunk:
            flush()
    ids_file.write_bytes(_term(_term_list([_term_binary(key) for key in reversed(ids)])))
    return ItemFiles(items, ids_file, len(ids))


def _shell_assignments(path: Path) -> dict[str, str]:
    """The plain ``NAME=value`` lines of a shell script or of ejabberdctl.cfg."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Z_]+)=(\"([^\"]*)\"|'([^']*)'|(\S*))\s*", line)
        if match:
            value = match.group(3) or match.group(4) or match.group(5) or ""
            found[match.group(1)] = value
    return found


def _helper_command(
    server: EjabberdServer, cookie: str, node: str, publisher_jid: str, files: ItemFiles
) -> list[str]:
    """The ``erl`` command line of the helper node, as ejabberdctl would reach the server."""
    ctl = shutil.which("ejabberdctl")
    if ctl is None:
        raise RuntimeError("ejabberdctl is not installed")
    # ejabberdctl holds the Erlang it runs ejabberd with and the default node name;
    # the server's ejabberdctl.cfg (sourced by ejabberdctl) overrides them.
    settings = _shell_assignments(Path(ctl))
    settings.update(_shell_assignments(server.data_dir / "ejabberdctl.cfg"))
    erl = settings.get("ERL") or shutil.which("erl") or "erl"
    target = settings.get("ERLANG_NODE", "ejabberd@localhost")
    host = target.partition("@")[2]
    # ejabberdctl's rule: short names unless the host part has a dot.
    name_flag = "-name" if "." in host else "-sname"
    me = f"roostfill{os.getpid()}x{uuid.uuid4().hex[:6]}@{host}"
    command = [erl, name_flag, me, "-hidden", "-noinput", "-setcookie", cookie]
    if settings.get("ERL_DIST_PORT"):
        # No epmd: the server listens on a fixed port, and a client that does not listen
        # itself is told that port for every node (ejabberdctl's own set_dist_client).
        port = settings["ERL_DIST_PORT"]
        command += ["-erl_epmd_port", port, "-start_epmd", "false", "-dist_listen", "false"]
    arguments = [target, server.pubsub_service, node, publisher_jid]
    arguments += [str(files.items), str(files.ids), str(files.count)]
    return [*command, "-eval", ERLANG, "-extra", *arguments]


async def fill_ejabberd_node(
    server: EjabberdServer,
    node: str,
    publisher_jid: str,
    payloads: Iterable[tuple[str, str]],
) -> int:
    """Add ``payloads`` (item id, payload XML) to ``node`` of the server's pubsub
    service as if ``publisher_jid`` had published them in that order; returns how many.

    The node must exist (create it over XMPP first) and have room for the items under
    its ``max_items``; the ids must be new to it. Each payload is one XML element, as
    in a publish. The items are written straight into ejabberd's mnesia tables: no
    notifications are sent, a publish's access and size checks are not made, and other
    pubsub requests to the server must wait until this returns (the item table's node
    index is rebuilt at the end). A failure (say, a payload that is not XML) raises
    with ejabberd's error; the items before it stay written.
    """
    ctl = await asyncio.to_thread(server.ctl, "get_cookie")
    cookie = ctl.stdout.decode().strip()
    with tempfile.TemporaryDirectory(prefix="roost-ejabberd-fill-") as tmp:
        files = await asyncio.to_thread(_write_items, Path(tmp), payloads)
        command = _helper_command(server, cookie, node, publisher_jid, files)
        env = dict(os.environ)
        # As ejabberdctl does: the server's own host resolution for the node names.
        inetrc = server.data_dir / "inetrc"
        if inetrc.exists():
            env["ERL_INETRC"] = str(inetrc)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"filling {node} failed: {err.decode().strip()}")
    written = int(out.decode().split()[-1])
    if written != files.count:
        raise RuntimeError(f"filling {node}: {written} items written of {files.count}")
    return written


# -- self-check: python bench/ejabberd_fill.py ------------------------------------------

# ROOST_FILL_CHECK_ITEMS=2000 for a quick run.
CHECK_ITEMS = int(os.environ.get("ROOST_FILL_CHECK_ITEMS", "100000"))


def _shape(element: ET.Element) -> tuple[Any, ...]:
    """An element as a comparable value: name, attributes, text and children."""
    children = tuple(_shape(child) for child in element)
    return (element.tag, sorted(element.attrib.items()), element.text or "", children)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def _fill_and_read(server: EjabberdServer) -> tuple[str, list[str]]:
    """Fill a node, read it back over XMPP, retract and publish; (node, its item ids)."""
    # Imported here: bench/cache.py imports this module.
    from bench.cache import COMMENTS, entry, publisher

    sessions, pubsub = await publisher(server)
    service, jid = server.pubsub_service, server.jid("alice")
    node = f"{COMMENTS}fill-check-{uuid.uuid4().hex[:8]}"
    # As bench/cache.py creates its nodes, plus itemreply so that every item shows its
    # publisher.
    config = {"pubsub#max_items": "max", "pubsub#itemreply": "publisher"}
    await pubsub.create_node("alice", service, node, config)
    ids = [f"i{n:06d}" for n in range(CHECK_ITEMS)]

    started = time.perf_counter()
    payloads = ((item_id, entry(n)) for n, item_id in enumerate(ids))
    count = await fill_ejabberd_node(server, node, jid, payloads)
    print(f"filled {count} items in {time.perf_counter() - started:.1f} s", flush=True)
    _expect(count == CHECK_ITEMS, f"{count} items written")

    started = time.perf_counter()
    items: list[PubsubItem] = []
    async for page in pubsub.server.fetch_all_items("alice", service, node):
        items.extend(page)
    print(f"fetched {len(items)} items with RSM in {time.perf_counter() - started:.1f} s")
    got = [item.id for item in items]
    _expect(len(got) == CHECK_ITEMS, f"RSM walk: {len(got)} items")
    _expect(got[0] == ids[0] and got[-1] == ids[-1], f"RSM walk: {got[0]} … {got[-1]}")
    _expect(got == ids, "RSM walk: items out of publication order")
    publishers = {item.publisher for item in items}
    _expect(publishers == {jid}, f"publishers {sorted(publishers)[:3]}")
    for n, item in enumerate(items):
        element = item.element if item.element is not None else ET.fromstring(item.xml)
        _expect(len(element) == 1, f"{item.id}: {len(element)} payload elements")
        _expect(_shape(element[0]) == _shape(ET.fromstring(entry(n))), f"{item.id}: payload")

    listed = await pubsub.server.list_item_ids("alice", service, node)
    _expect(listed == ids, f"disco#items: {len(listed)} ids, not in publication order")

    # The node goes on like a published one: a retract finds its item in the
    # publisher's state, and a publish lands after the filled items. (Retract first: at
    # max_items_node items the publish would push the oldest item out, as it should.)
    middle = ids[CHECK_ITEMS // 2]
    await pubsub.retract("alice", service, node, [middle])
    await pubsub.publish("alice", service, node, "after", entry(CHECK_ITEMS))
    expected = [i for i in ids if i != middle] + ["after"]
    listed = await pubsub.server.list_item_ids("alice", service, node)
    _expect(listed == expected, "retract/publish after fill")
    await sessions.close()
    return node, expected


async def _read_again(server: EjabberdServer, node: str, expected: list[str]) -> None:
    """The node's listing, after a restart of the server."""
    from bench.cache import publisher

    sessions, pubsub = await publisher(server)
    listed = await pubsub.server.list_item_ids("alice", server.pubsub_service, node)
    _expect(listed == expected, f"after a restart: {len(listed)} ids")
    await sessions.close()


def main() -> None:
    """Start ejabberd as the benches do, fill and check one node, restart, check again."""
    with tempfile.TemporaryDirectory(prefix="roost-ejabberd-fill-check-") as tmp:
        data_dir = Path(tmp)
        data_dir.chmod(0o755)
        server = EjabberdServer(kind="ejabberd", data_dir=data_dir, port=free_port())
        try:
            server.setup()
            node, expected = asyncio.run(_fill_and_read(server))
            server.stop()
            server.start()
            asyncio.run(_read_again(server, node, expected))
        finally:
            server.stop()
    print("ok: count, ids, order, publisher, payloads, disco#items, retract, publish, restart")


if __name__ == "__main__":
    main()
