"""@frozen (broker/frozen.py) makes what @dataclass(frozen=True) makes, with a faster __init__:
the same fields, defaults, factories, equality, hash, repr and refusal to change; classes it
cannot make exactly are refused."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from broker.audit import AuditEvent
from broker.frozen import frozen
from broker.policy.evaluate import Request
from broker.sts.tokens import Session


def both(body: dict[str, Any]) -> tuple[type, type]:
    """The same class made twice: by @frozen and by @dataclass(frozen=True) (the control)."""
    fast = frozen(type("Value", (), dict(body)))
    plain = dataclasses.dataclass(frozen=True)(type("Value", (), dict(body)))
    return fast, plain


BODY: dict[str, Any] = {
    "__annotations__": {"a": "int", "b": "str", "c": "list[int]", "d": "tuple[int, ...]",
                        "self": "int"},
    "b": "b",
    "c": dataclasses.field(default_factory=list),
    "d": (),
    "self": 0,
}


@pytest.mark.parametrize("args", [(1,), (1, "x"), (1, "x", [2]), (1, "x", [2], (3,))])
def test_instances_equal_the_plain_dataclasss(args: tuple[Any, ...]) -> None:
    fast, plain = both(BODY)
    made, control = fast(*args), plain(*args)
    assert vars(made) == vars(control)
    assert repr(made) == repr(control)
    assert made == fast(*args) and made != fast(2, *args[1:])
    assert [(f.name, f.default, f.default_factory) for f in dataclasses.fields(made)] == \
        [(f.name, f.default, f.default_factory) for f in dataclasses.fields(control)]
    # Hashed by value, as the plain one (with a hashable value where the list goes).
    assert hash(fast(1, "x", (2,))) == hash(plain(1, "x", (2,)))


def test_keywords_defaults_and_a_fresh_factory_value_each_time() -> None:
    fast, _ = both(BODY)
    one, two = fast(a=1), fast(1, d=(4,))
    assert (one.b, one.c, one.d) == ("b", [], ())
    assert two.d == (4,)
    assert one.c is not fast(1).c
    with pytest.raises(TypeError):
        fast()  # a has no default
    with pytest.raises(TypeError):
        fast(1, e=2)


def test_still_frozen_and_the_control() -> None:
    fast, plain = both(BODY)
    for cls in (fast, plain):
        value = cls(1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.a = 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            del value.b


def test_the_signature_names_the_same_parameters() -> None:
    fast, plain = both(BODY)
    ours = inspect.signature(fast.__init__).parameters
    theirs = inspect.signature(plain.__init__).parameters
    assert list(ours)[1:] == list(theirs)[1:]  # after the instance itself
    assert [p.default for n, p in ours.items() if n in ("b", "d")] == ["b", ()]


@pytest.mark.parametrize("body", [
    {"__annotations__": {"a": "int"}, "__post_init__": lambda self: None},
    {"__annotations__": {"a": "int", "b": "int"}, "b": dataclasses.field(default=0,
                                                                         init=False)},
    {"__annotations__": {"a": "int"}, "a": dataclasses.field(kw_only=True)},
])
def test_what_it_cannot_make_exactly_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        frozen(type("Value", (), body))
    dataclasses.dataclass(frozen=True)(type("Value", (), body))  # the control: a dataclass


def test_the_request_path_value_objects_are_made_by_it() -> None:
    for cls in (Session, AuditEvent, Request):
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert "__dataclass_builtins_object__" not in cls.__init__.__code__.co_names
