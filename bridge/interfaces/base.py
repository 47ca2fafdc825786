"""What every Roost D-Bus interface shares: error mapping, call tracking, type aliases.

The interface classes only declare and delegate: each member converts its arguments,
calls the :class:`~roost.service.backend.Backend`, and converts the result. The
:func:`roost_method` decorator maps exceptions at the boundary and records calls in
flight, so that a shutdown lets them finish before the bus connection closes.
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface

from roost.bridge.errors import to_dbus_error
from roost.service.backend import Backend

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusStrDict = Annotated[dict[str, str], DBusSignature("a{ss}")]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_I = TypeVar("_I", bound="RoostInterface")


class RoostInterface(ServiceInterface):
    """A Roost interface bound to a :class:`Backend`, counting the calls it is serving."""

    def __init__(self, name: str, backend: Backend) -> None:
        super().__init__(name)
        self.backend = backend
        self.calls: set[asyncio.Task[Any]] = set()

    async def drain(self) -> None:
        """Wait until every call in flight has answered."""
        while self.calls:
            await asyncio.gather(*list(self.calls), return_exceptions=True)

    def close(self) -> None:
        """Stop listening to the backend's events (the bridge is shutting down)."""


def roost_method(
    fn: Callable[Concatenate[_I, _P], Awaitable[_R]],
) -> Callable[Concatenate[_I, _P], Coroutine[Any, Any, _R]]:
    """Wrap a D-Bus member: map its exceptions to named errors and track it in flight.

    Place it under ``@dbus_method()``; dbus-fast reads the signature of the wrapped
    function, so the annotations stay where they are written.
    """

    async def wrapper(self: _I, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        task = asyncio.current_task()
        if task is not None:
            self.calls.add(task)
        try:
            return await fn(self, *args, **kwargs)
        except Exception as err:
            raise to_dbus_error(err, f"{self.name}.{fn.__name__}") from None
        finally:
            if task is not None:
                self.calls.discard(task)

    # dbus-fast reads the D-Bus signature from the wrapped function (__wrapped__).
    functools.update_wrapper(wrapper, fn)
    return wrapper


def name_args(member: Callable[..., Any], *names: str) -> None:
    """Give names to a signal's arguments or a method's results in the introspection.

    dbus-fast takes these from a return annotation, which carries no names; the D-Bus
    API guide asks for them, and frontends' generated bindings use them.
    """
    spec = member.__dict__.get("__DBUS_SIGNAL") or member.__dict__.get("__DBUS_METHOD")
    if spec is None:
        raise TypeError(f"{member!r} is not a D-Bus member")
    intro = spec.introspection
    args = intro.args if hasattr(intro, "args") else intro.out_args
    if len(args) != len(names):
        raise ValueError(f"{len(names)} names for {len(args)} arguments of {intro.name}")
    for arg, arg_name in zip(args, names, strict=True):
        arg.name = arg_name
