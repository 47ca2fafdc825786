r"""LIKE patterns translated into forms each database matches exactly as Roost means them.

A search's ``like``/``ilike`` pattern has ``%`` for any run of characters, ``_`` for one
character, and a backslash that makes the next character literal (a trailing backslash
stands for itself). Neither database's own LIKE means quite that (SQLite's ignores ASCII
case only, and always; PostgreSQL's ILIKE folds case by the database's locale), so the
pattern becomes a GLOB on SQLite and an anchored regular expression on PostgreSQL, in
which ignoring case turns each cased letter into a class of its lower and upper case
forms: the same matches on both, non-ASCII letters included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# Characters with a meaning in a PostgreSQL advanced regular expression.
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")


def _pieces(pattern: str) -> Iterator[tuple[str, str]]:
    """``("any", "")``, ``("one", "")`` or ``("char", c)`` for each part of ``pattern``."""
    escaped = False
    for ch in pattern:
        if escaped or ch not in "%_\\":
            escaped = False
            yield "char", ch
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            yield "any", ""
        else:
            yield "one", ""
    if escaped:  # a trailing backslash stands for itself
        yield "char", "\\"


def _case_forms(ch: str, ignore_case: bool) -> list[str]:
    if not ignore_case:
        return [ch]
    return sorted({f for f in (ch, ch.lower(), ch.upper()) if len(f) == 1})


def _translate(
    pattern: str, *, any_run: str, one: str, literal: Callable[[str], str], ignore_case: bool
) -> str:
    out: list[str] = []
    for kind, ch in _pieces(pattern):
        if kind == "any":
            out.append(any_run)
        elif kind == "one":
            out.append(one)
        else:
            forms = _case_forms(ch, ignore_case)
            if len(forms) > 1:
                out.append("[" + "".join(forms) + "]")
            else:
                out.append(literal(ch))
    return "".join(out)


def _glob_literal(ch: str) -> str:
    return f"[{ch}]" if ch in "*?[" else ch


def like_to_glob(pattern: str, *, ignore_case: bool) -> str:
    """Translate a LIKE pattern into an SQLite GLOB pattern (GLOB is case-sensitive)."""
    return _translate(pattern, any_run="*", one="?", literal=_glob_literal, ignore_case=ignore_case)


def _regex_literal(ch: str) -> str:
    return "\\" + ch if ch in _REGEX_SPECIAL else ch


def like_to_regex(pattern: str, *, ignore_case: bool) -> str:
    """Translate a LIKE pattern into an anchored PostgreSQL regular expression.

    ``.`` matches any character there, newlines included (the default, non
    newline-sensitive mode), as ``%`` and ``_`` do; letters in a class are plain
    characters (no class holds ``]``, ``^``, ``-`` or ``\\``, which have no case).
    """
    body = _translate(
        pattern, any_run=".*", one=".", literal=_regex_literal, ignore_case=ignore_case
    )
    return "^(?:" + body + ")$"
