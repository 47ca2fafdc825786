"""Cache search: validation, and every operator against a plain-Python reference filter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.storage.errors import InvalidQuery
from roost.storage.item_records import ItemInput, SearchHit
from roost.storage.search import MAX_SEARCH_LIMIT, OPERATORS, SearchQuery, fts_terms
from tests.storage.test_paging import Harness

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
MISSING = object()


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


def store(harness: Harness, docs: list[Any], texts: list[str] | None = None) -> None:
    """Replace the blog node's items by one item per document, created 1, 2, 3…"""
    blog = harness.db.nodes["blog"]
    items = [
        ItemInput(f"i{n}", "", "<item/>", doc, texts[n] if texts else "", float(n + 1))
        for n, doc in enumerate(docs)
    ]

    async def write() -> None:
        await harness.db.items.clear_node(blog)
        await harness.db.items.upsert_items(blog, items)

    harness.run(write())


def search(harness: Harness, query: dict[str, Any]) -> list[SearchHit]:
    hits: list[SearchHit] = harness.run(harness.db.search.search(query))
    return hits


# --- the reference -------------------------------------------------------------------


def kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return None


def at_path(doc: Any, path: str) -> Any:
    for seg in path.split("."):
        if seg.isdigit():
            if not isinstance(doc, list) or int(seg) >= len(doc):
                return MISSING
            doc = doc[int(seg)]
        else:
            if not isinstance(doc, dict) or seg not in doc:
                return MISSING
            doc = doc[seg]
    return doc


def like_regex(pattern: str) -> str:
    out, escaped = [], False
    for ch in pattern:
        if escaped or ch not in "%_\\":
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(".*" if ch == "%" else ".")
    if escaped:
        out.append(re.escape("\\"))
    return "".join(out)


def reference_match(doc: Any, path: str, op: str, operand: Any) -> bool:
    value = at_path(doc, path)
    operands = operand if isinstance(operand, list) else [operand]
    want = kind(operands[0]) if operands else None
    if op in ("contains", "overlap"):
        return kind(value) == "array" and any(
            kind(e) == kind(o) and e == o for e in value for o in operands
        )
    if op == "in" and not operands:
        return False
    if kind(value) != want:
        return False
    compare = {
        "eq": lambda: value == operand,
        "ne": lambda: value != operand,
        "lt": lambda: value < operand,
        "le": lambda: value <= operand,
        "gt": lambda: value > operand,
        "ge": lambda: value >= operand,
        "between": lambda: operand[0] <= value <= operand[1],
        "in": lambda: value in operand,
        "not_in": lambda: value not in operand,
        "like": lambda: re.fullmatch(like_regex(operand), value, re.DOTALL) is not None,
        "ilike": lambda: re.fullmatch(like_regex(operand), value, re.DOTALL | re.I) is not None,
    }
    return bool(compare[op]())


# --- generated data ------------------------------------------------------------------

ALPHABET = "aAbBéÉ%_[]*?\\ "
strings = st.text(alphabet=ALPHABET, max_size=4)
numbers = st.one_of(
    st.integers(min_value=-4, max_value=4), st.sampled_from([-1.5, 0.5, 2.0, 2.5, 1e15])
)
scalars = st.one_of(strings, numbers, st.booleans())
json_values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=4))
documents = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.one_of(strings, json_values),
            "tags": st.lists(scalars, max_size=4),
            "nested": st.fixed_dictionaries({}, optional={"k": st.one_of(strings, json_values)}),
            "a-b": json_values,
        },
    ),
)
PATHS = ["v", "tags", "tags.0", "tags.2", "nested.k", "a-b", "nowhere"]


def scalars_in(doc: Any) -> list[Any]:
    """Every scalar in a document, so that operands often hit stored values."""
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in scalars_in(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in scalars_in(v)]
    return [] if doc is None else [doc]


def operand_for(data: st.DataObject, op: str, docs: list[Any]) -> Any:
    """An operand of the right type for ``op``, half of the time made of stored values."""
    present = [v for doc in docs for v in scalars_in(doc)]
    if op in ("like", "ilike"):
        present = [v for v in present if isinstance(v, str)]
        return data.draw(st.sampled_from(present) | strings if present else strings)
    if op in ("lt", "le", "gt", "ge", "between"):
        present = [v for v in present if not isinstance(v, bool)]
        base: st.SearchStrategy[Any] = st.one_of(strings, numbers)
    else:
        base = scalars
    element = st.sampled_from(present) | base if present else base
    if op == "between":
        low = data.draw(element)
        same_kind = st.sampled_from([v for v in present if kind(v) == kind(low)] or [low])
        return [low, data.draw(same_kind | (strings if kind(low) == "string" else numbers))]
    if op in ("in", "not_in", "overlap"):
        first = data.draw(element)
        rest = data.draw(
            st.lists(
                st.sampled_from([v for v in present if kind(v) == kind(first)] or [first]),
                max_size=3,
            )
        )
        if op != "not_in" and data.draw(st.booleans()):
            return []
        return [first, *rest]
    return data.draw(element)


@pytest.mark.parametrize("op", OPERATORS)
@SETTINGS
@given(docs=st.lists(documents, max_size=12), data=st.data())
def test_every_operator_matches_the_reference(
    harness: Harness, op: str, docs: list[Any], data: st.DataObject
) -> None:
    # Most documents hold a string at "v": the pattern operators need strings to test.
    path = data.draw(st.sampled_from(PATHS) | st.just("v"))
    operand = operand_for(data, op, docs)
    store(harness, docs)
    query = {"parsed": [{"path": path, "op": op, "value": operand}], "limit": MAX_SEARCH_LIMIT}
    got = {h.item_id for h in search(harness, query)}
    expected = {f"i{n}" for n, doc in enumerate(docs) if reference_match(doc, path, op, operand)}
    assert got == expected


order_values = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.5]), strings, st.none())


@SETTINGS
@given(
    values=st.lists(st.one_of(order_values, st.just(MISSING)), max_size=10),
    descending=st.booleans(),
)
def test_order_by_path_then_newest(harness: Harness, values: list[Any], descending: bool) -> None:
    store(harness, [{} if v is MISSING else {"v": v} for v in values])
    direction = "desc" if descending else "asc"
    hits = search(harness, {"order_by": [{"path": "v", "direction": direction}]})

    def sort_key(n: int) -> tuple[Any, ...]:
        v = values[n]
        if v is MISSING or v is None:
            return (1, 0, 0, -n)
        rank, value = (0, v) if kind(v) == "number" else (1, v)
        if descending:  # flip the value order only, never "missing last"
            return (0, -rank, _Reversed(value), -n)
        return (0, rank, value, -n)

    expected = [f"i{n}" for n in sorted(range(len(values)), key=sort_key)]
    assert [h.item_id for h in hits] == expected


class _Reversed:
    """Wraps a value so that it sorts in reverse."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(self.value > other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)


def test_default_order_is_newest_first_and_limit_offset_page(harness: Harness) -> None:
    store(harness, [{"n": n} for n in range(7)])
    assert [h.item_id for h in search(harness, {})] == [f"i{n}" for n in range(6, -1, -1)]
    page = search(harness, {"limit": 2, "offset": 3})
    assert [h.item_id for h in page] == ["i3", "i2"]
    page = search(harness, {"order_by": [{"field": "created", "direction": "asc"}], "limit": 3})
    assert [h.item_id for h in page] == ["i0", "i1", "i2"]


WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime"]


@SETTINGS
@given(
    texts=st.lists(st.lists(st.sampled_from(WORDS), max_size=5).map(" ".join), max_size=10),
    terms=st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
)
def test_fulltext_requires_every_word(harness: Harness, texts: list[str], terms: list[str]) -> None:
    store(harness, [None] * len(texts), texts)
    got = {h.item_id for h in search(harness, {"fts": " ".join(terms)})}
    expected = {f"i{n}" for n, t in enumerate(texts) if set(terms) <= set(t.split())}
    assert got == expected


@SETTINGS
@given(text=st.text(max_size=20))
def test_no_fulltext_input_reaches_fts5_syntax(harness: Harness, text: str) -> None:
    store(harness, [None], ['the "quoted" text OR NOT near*'])
    try:
        hits = search(harness, {"fts": text})
    except InvalidQuery:
        assert not any(c.isalnum() for c in text)
    else:
        assert len(hits) <= 1


def test_fulltext_phrases_and_operators_are_plain_words(harness: Harness) -> None:
    store(harness, [None, None], ["red fox and blue cat", "blue fox OR red cat"])
    assert {h.item_id for h in search(harness, {"fts": '"red fox"'})} == {"i0"}
    assert {h.item_id for h in search(harness, {"fts": "fox OR"})} == {"i1"}
    assert {h.item_id for h in search(harness, {"fts": "Blue"})} == {"i0", "i1"}
    assert fts_terms('a "b c') == ("a", "b c")


def test_fulltext_ignores_case_and_diacritics_on_both_sides(harness: Harness) -> None:
    store(harness, [None, None, None], ["Crème Brûlée recipe", "plain creme", "Ærøskøbing ferry"])
    assert {h.item_id for h in search(harness, {"fts": "creme BRULEE"})} == {"i0"}
    assert {h.item_id for h in search(harness, {"fts": "CRÈME"})} == {"i0", "i1"}
    assert {h.item_id for h in search(harness, {"fts": '"brulee recipe"'})} == {"i0"}
    assert {h.item_id for h in search(harness, {"fts": '"recipe brulee"'})} == set()
    assert {h.item_id for h in search(harness, {"fts": "ferry"})} == {"i2"}


def test_list_filters_select_nodes_and_items(harness: Harness) -> None:
    db = harness.db
    for key in db.nodes:
        harness.run(
            db.items.upsert_items(
                db.nodes[key], [ItemInput(f"{key}-{n}", "", "", None, "") for n in range(2)]
            )
        )
    by = {
        k: {h.item_id for h in search(harness, q)}
        for k, q in {
            "bob": {"profiles": ["bob"]},
            "feed": {"types": ["feed"], "subtypes": ["atom"]},
            "service": {"services": ["pubsub.example.org"], "nodes": ["urn:xmpp:microblog:0"]},
            "ids": {"item_ids": ["blog-1", "news-0"], "profiles": []},
        }.items()
    }
    assert by["bob"] == {"bob_blog-0", "bob_blog-1"}
    assert by["feed"] == {"news-0", "news-1"}
    assert by["service"] == {"blog-0", "blog-1", "bob_blog-0", "bob_blog-1"}
    assert by["ids"] == {"blog-1", "news-0"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"colour": "red"}, "unknown search key"),
        ({"profiles": "alice"}, "list of strings"),
        ({"profiles": [1]}, "list of strings"),
        ({"fts": 3}, "fts must be a string"),
        ({"fts": " -- "}, "no word"),
        ({"parsed": {"path": "a"}}, "list of mappings"),
        ({"parsed": [{"path": "a", "op": "eq"}]}, "exactly path, op and value"),
        ({"parsed": [{"path": "a", "op": "regex", "value": "x"}]}, "unknown operator"),
        ({"parsed": [{"path": "a') OR 1=1 --", "op": "eq", "value": 1}]}, "neither a key"),
        ({"parsed": [{"path": "a..b", "op": "eq", "value": 1}]}, "neither a key"),
        ({"parsed": [{"path": "-a", "op": "eq", "value": 1}]}, "neither a key"),
        ({"parsed": [{"path": "", "op": "eq", "value": 1}]}, "non-empty string"),
        ({"parsed": [{"path": "a", "op": "eq", "value": [1]}]}, "takes a string"),
        ({"parsed": [{"path": "a", "op": "eq", "value": None}]}, "takes a string"),
        ({"parsed": [{"path": "a", "op": "lt", "value": float("nan")}]}, "finite number"),
        ({"parsed": [{"path": "a", "op": "lt", "value": True}]}, "not booleans"),
        ({"parsed": [{"path": "a", "op": "between", "value": [1]}]}, "[low, high]"),
        ({"parsed": [{"path": "a", "op": "between", "value": [1, "b"]}]}, "one kind"),
        ({"parsed": [{"path": "a", "op": "in", "value": "abc"}]}, "takes a list"),
        ({"parsed": [{"path": "a", "op": "not_in", "value": []}]}, "at least one"),
        ({"parsed": [{"path": "a", "op": "like", "value": 3}]}, "pattern string"),
        ({"parsed": [{"path": "a", "op": "overlap", "value": [{"x": 1}]}]}, "one kind"),
        ({"order_by": [{"path": "a", "field": "created"}]}, "either path or field"),
        ({"order_by": [{"field": "position"}]}, "field must be one of"),
        ({"order_by": [{"path": "a", "direction": "up"}]}, "'asc' or 'desc'"),
        ({"limit": MAX_SEARCH_LIMIT + 1}, "at most"),
        ({"limit": -1}, "non-negative"),
        ({"offset": -5}, "non-negative"),
        ({"offset": True}, "non-negative"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(query: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidQuery, match=re.escape(message)):
        SearchQuery.from_mapping(query)


def test_good_query_is_kept() -> None:
    query = SearchQuery.from_mapping(
        {
            "profiles": ["alice"],
            "fts": "hello world",
            "parsed": [{"path": "tags.0", "op": "in", "value": ["a", "b"]}],
            "order_by": [{"path": "author.name"}, {"field": "updated", "direction": "desc"}],
            "limit": 5,
        }
    )
    assert query.profiles == ("alice",)
    assert query.fts == ("hello", "world")
    assert query.parsed[0].path == ("tags", 0)
    assert query.parsed[0].value == ("a", "b")
    assert [(k.path, k.field, k.descending) for k in query.order_by] == [
        (("author", "name"), None, False),
        (None, "updated", True),
    ]
    assert (query.limit, query.offset) == (5, 0)


LIKE_CASES = [
    # (pattern, value, like matches, ilike matches)
    ("a*", "ab", False, False),
    ("a*", "a*", True, True),
    ("?", "x", False, False),
    ("[ab]", "a", False, False),
    ("[ab]", "[ab]", True, True),
    ("a%", "abc", True, True),
    ("A%", "abc", False, True),
    ("_b_", "abc", True, True),
    ("_B_", "abc", False, True),
    ("É%", "école", False, True),
    (r"100\%", "100%", True, True),
    (r"100\%", "1000", False, False),
    (r"a\_c", "abc", False, False),
    ("a\\", "a\\", True, True),
    ("%", "", True, True),
    ("", "", True, True),
    ("a]", "a]", True, True),
]


@pytest.mark.parametrize(("pattern", "value", "like", "ilike"), LIKE_CASES)
def test_like_patterns(harness: Harness, pattern: str, value: str, like: bool, ilike: bool) -> None:
    store(harness, [{"v": value}])
    for op, expected in (("like", like), ("ilike", ilike)):
        assert reference_match({"v": value}, "v", op, pattern) is expected
        hits = search(harness, {"parsed": [{"path": "v", "op": op, "value": pattern}]})
        assert bool(hits) is expected, (op, pattern, value)
