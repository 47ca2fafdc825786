"""'roost param' and 'roost value': parameters (text settings) and typed values.

Values keep their D-Bus type: 'value set' takes the type as a D-Bus signature and
parses the text given into it, 'value get' shows each value with its type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.options import json_option, profile_option
from roost.cli.output import console, print_json, print_table
from roost.cli.session import CliOptions, CommandError, fail, run_with_client

if TYPE_CHECKING:
    from dbus_fast import Variant
    from dbus_fast.signature import SignatureType

    from roost.bridge.client import RoostClient

F = TypeVar("F", bound=Callable[..., Any])

GLOBAL = "@global@"
_INTEGERS = frozenset("ynqiuxt")
_TEXTS = frozenset("sog")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def scope_options(function: F) -> F:
    """'-p/--profile' and '--global': whose settings (default: the default profile)."""
    function = click.option(
        "--global",
        "global_",
        is_flag=True,
        help="Settings of no profile (the daemon's @global@ scope).",
    )(function)
    return profile_option(function)


def scope(profile: str, global_: bool) -> str:
    """The 'profile' argument of the Storage interface."""
    if global_ and profile:
        raise click.UsageError("give -p/--profile or --global, not both")
    return GLOBAL if global_ else profile


# -- roost param ----------------------------------------------------------------------


@click.group("param")
def param_group() -> None:
    """Parameters: settings as text, by category and name, per profile or global."""


@param_group.command("get")
@click.argument("category")
@click.argument("name")
@scope_options
@json_option
@click.pass_obj
def param_get(
    options: CliOptions, category: str, name: str, profile: str, global_: bool, as_json: bool
) -> None:
    """Print the parameter NAME of CATEGORY. JSON: '{"NAME": "value"}'."""
    where = scope(profile, global_)

    async def body(client: RoostClient) -> str:
        return await client.get_param(where, category, name)

    value = run_with_client(options, body)
    if as_json:
        print_json({name: value})
    else:
        click.echo(value)


@param_group.command("set")
@click.argument("category")
@click.argument("name")
@click.argument("value")
@scope_options
@click.pass_obj
def param_set(
    options: CliOptions, category: str, name: str, value: str, profile: str, global_: bool
) -> None:
    """Set the parameter NAME of CATEGORY to VALUE (created or replaced)."""
    where = scope(profile, global_)

    async def body(client: RoostClient) -> None:
        await client.set_param(where, category, name, value)

    run_with_client(options, body)


@param_group.command("list")
@click.argument("category")
@scope_options
@json_option
@click.pass_obj
def param_list(
    options: CliOptions, category: str, profile: str, global_: bool, as_json: bool
) -> None:
    """List the parameters of CATEGORY. JSON: '{"name": "value", ...}' ('{}': none)."""
    where = scope(profile, global_)

    async def body(client: RoostClient) -> dict[str, str]:
        return await client.list_params(where, category)

    params = run_with_client(options, body)
    if as_json:
        print_json(dict(sorted(params.items())))
        return
    print_table(["Name", "Value"], sorted(params.items()), title=f"Parameters of {category}")


# -- roost value ------------------------------------------------------------------------


def parse_value(signature: str, text: str) -> Variant:
    """'text' as a value of the D-Bus type 'signature'.

    A string ('s', 'o', 'g') is taken as is; a number or a boolean from its usual
    spelling; anything else (containers, structs, variants, byte arrays) from JSON: an
    array for 'a…', '(…)' and 'ay' (integers 0 to 255), an object for 'a{…}',
    whose keys are converted to the key type. Inside a 'v', the type is guessed from
    the JSON value ('true': 'b', '3': 'x', '2.5': 'd', text: 's', a list
    of strings: 'as', an object: 'a{sv}').

    Raises:
        CommandError: ('INVALID_ARGUMENT') the signature is not one complete type, or
            the text is not a value of it.
    """
    from dbus_fast import Variant
    from dbus_fast.signature import get_signature_tree

    try:
        types = get_signature_tree(signature).types
    except Exception as exc:
        raise CommandError(
            f"{signature!r} is not a D-Bus signature: {exc}", ExitCode.INVALID_ARGUMENT
        ) from None
    if len(types) != 1:
        raise CommandError(
            f"{signature!r} is not a single D-Bus type (a value has one type: "
            "wrap several in a struct, '(…)')",
            ExitCode.INVALID_ARGUMENT,
        )
    kind = types[0]
    try:
        if kind.token in _TEXTS:
            value: Any = text
        elif kind.token in _INTEGERS or kind.token == "d" or kind.token == "b":
            value = _scalar(kind.token, text.strip())
        else:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"a {signature} value is given as JSON ({exc})") from None
            value = _convert(kind, document)
        return Variant(signature, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CommandError(
            f"{text!r} is not a value of type {signature}: {exc}", ExitCode.INVALID_ARGUMENT
        ) from None
    except Exception as exc:  # dbus-fast's range and type checks
        raise CommandError(
            f"{text!r} is not a value of type {signature}: {exc}", ExitCode.INVALID_ARGUMENT
        ) from None


def _scalar(token: str, text: str) -> Any:
    if token == "b":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("a boolean is true or false")
    if token == "d":
        return float(text)
    return int(text, 0)


def _convert(kind: SignatureType, document: Any) -> Any:
    """A JSON document as the Python value dbus-fast sends for 'kind'."""
    token = kind.token
    if token == "b":
        if not isinstance(document, bool):
            raise ValueError(f"{document!r} is not a boolean")
        return document
    if token in _INTEGERS:
        if isinstance(document, bool) or not isinstance(document, int):
            raise ValueError(f"{document!r} is not an integer")
        return document
    if token == "d":
        if isinstance(document, bool) or not isinstance(document, (int, float)):
            raise ValueError(f"{document!r} is not a number")
        return float(document)
    if token in _TEXTS:
        if not isinstance(document, str):
            raise ValueError(f"{document!r} is not a string")
        return document
    if token == "v":
        from roost.bridge.pubsub_client import wrap

        if document is None:
            raise ValueError("null has no D-Bus type")
        return wrap(document)
    if token == "h":
        raise ValueError("file descriptors (h) cannot be stored")
    if token == "(":
        if not isinstance(document, list) or len(document) != len(kind.children):
            raise ValueError(f"a struct {kind.signature} is an array of {len(kind.children)}")
        return [_convert(child, item) for child, item in zip(kind.children, document, strict=True)]
    if token == "a":
        child = kind.children[0]
        if child.token == "{":
            if not isinstance(document, dict):
                raise ValueError(f"a dict {kind.signature} is a JSON object")
            key_type, value_type = child.children
            return {
                _key(key_type, key): _convert(value_type, item) for key, item in document.items()
            }
        if not isinstance(document, list):
            raise ValueError(f"an array {kind.signature} is a JSON array")
        if child.token == "y":
            return bytes(document)
        return [_convert(child, item) for item in document]
    raise ValueError(f"unsupported type {kind.signature}")


def _key(kind: SignatureType, text: str) -> Any:
    """A JSON object's key (always text) as a dict key of type 'kind'."""
    if kind.token in _TEXTS:
        return text
    return _scalar(kind.token, text)


def jsonable(value: Any) -> Any:
    """A value dbus-fast gave, as JSON: variants inside by their value, bytes as an
    array of integers, structs as arrays."""
    from dbus_fast import Variant

    if isinstance(value, Variant):
        return jsonable(value.value)
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {_json_key(key): jsonable(item) for key, item in value.items()}
    return value


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    return json.dumps(key)


@click.group("value")
def value_group() -> None:
    """Values: a namespaced key/value store whose values keep their D-Bus type."""


@value_group.command("get")
@click.argument("namespace")
@click.argument("keys", nargs=-1, metavar="[KEY]...")
@scope_options
@json_option
@click.pass_obj
def value_get(
    options: CliOptions,
    namespace: str,
    keys: tuple[str, ...],
    profile: str,
    global_: bool,
    as_json: bool,
) -> None:
    """Show the values of KEYs in NAMESPACE (no KEY: every value of the namespace), each
    with its D-Bus type.

    JSON: '{"key": {"signature": "as", "value": ["a", "b"]}}'. A KEY with nothing
    stored is an error (exit 4).
    """
    where = scope(profile, global_)

    async def body(client: RoostClient) -> dict[str, Variant]:
        return await client.get_values(where, namespace, list(keys))

    values = run_with_client(options, body)
    missing = [key for key in dict.fromkeys(keys) if key not in values]
    if missing:
        fail(f"nothing stored at {', '.join(missing)} in namespace {namespace}", ExitCode.NOT_FOUND)
    document = {
        key: {"signature": values[key].signature, "value": jsonable(values[key].value)}
        for key in sorted(values)
    }
    if as_json:
        print_json(document)
        return
    if not document:
        console().print(f"[dim](nothing stored in namespace {namespace})[/dim]")
        return
    print_table(
        ["Key", "Type", "Value"],
        (
            [key, entry["signature"], json.dumps(entry["value"], ensure_ascii=False)]
            for key, entry in document.items()
        ),
        title=f"Values of {namespace}",
    )


@value_group.command("set")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@click.option(
    "-t",
    "--type",
    "signature",
    default="s",
    show_default=True,
    metavar="SIGNATURE",
    help="The value's D-Bus type (s, i, u, x, b, d, as, a{sv}, (ii), ay…); "
    "containers are given as JSON.",
)
@scope_options
@click.pass_obj
def value_set(
    options: CliOptions,
    namespace: str,
    key: str,
    value: str,
    signature: str,
    profile: str,
    global_: bool,
) -> None:
    """Store VALUE at KEY in NAMESPACE, with its D-Bus type (--type).

    Examples: 'roost value set myapp theme dark', 'roost value set myapp size
    --type '(ii)' '[800, 600]'', 'roost value set myapp recent --type as '["a.txt"]''.
    """
    where = scope(profile, global_)
    try:
        variant = parse_value(signature, value)
    except CommandError as exc:
        fail(str(exc), exc.code)

    async def body(client: RoostClient) -> None:
        await client.set_value(where, namespace, key, variant)

    run_with_client(options, body)


@value_group.command("delete")
@click.argument("namespace")
@click.argument("key")
@scope_options
@click.pass_obj
def value_delete(
    options: CliOptions, namespace: str, key: str, profile: str, global_: bool
) -> None:
    """Remove the value at KEY in NAMESPACE (exit 4 when nothing is stored there)."""
    where = scope(profile, global_)

    async def body(client: RoostClient) -> None:
        await client.delete_value(where, namespace, key)

    run_with_client(options, body)
