"""broker.jsontext: JSON from outside is read one way, and what it gives back is always text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import jsontext
from broker.jsontext import JsonRefused

# Every code point, the lone halves of surrogate pairs included.
ANY_CHARACTER = st.characters(codec=None, categories=None, exclude_categories=())
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
honest_text = st.text(st.characters(codec="utf-8"), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | honest_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(honest_text, inner, max_size=4),
    max_leaves=20)


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_of(v)]]
    return []


@settings(max_examples=500)
@given(st.text(ANY_CHARACTER, max_size=60) | st.builds(
    lambda v, s: json.dumps(v)[:-1] + json.dumps(s) + json.dumps(v)[-1:],
    json_values, st.text(ANY_CHARACTER, max_size=5)))
def test_anything_is_read_or_refused_and_what_is_read_is_text(document: str) -> None:
    try:
        value = jsontext.loads(document)
    except JsonRefused:
        return
    for text in strings_of(value):
        text.encode("utf-8")  # never raises: every string can be stored, hashed, signed


@settings(max_examples=300)
@given(json_values, SURROGATE)
def test_a_lone_surrogate_anywhere_is_refused_and_the_control(value: Any, half: str) -> None:
    assert jsontext.loads(json.dumps(value)) == value  # the control: honest JSON reads back
    spoiled = json.dumps({"before": value, half: 1})  # json.dumps writes it as a \u escape
    assert "\\ud" in spoiled
    with pytest.raises(JsonRefused, match="surrogate"):
        jsontext.loads(spoiled)
    with pytest.raises(JsonRefused, match="surrogate"):
        jsontext.loads(json.dumps([value, "x" + half + "y"]))


def test_numbers_read_back_as_written() -> None:
    """The control of the too-large numbers: big integers and ordinary floats are kept."""
    assert jsontext.loads('{"n": 1e300, "i": ' + "9" * 400 + "}") == {"n": 1e300,
                                                                      "i": int("9" * 400)}
    assert json.loads(json.dumps(jsontext.loads('[1.5, -0.0, 2e-300]'))) == [1.5, -0.0, 2e-300]


def test_a_pair_written_as_escapes_is_one_character() -> None:
    assert jsontext.loads('"\\ud83d\\ude00"') == "\U0001F600"
    assert jsontext.loads('"\\uD83D\\uDE00"') == "\U0001F600"
    for lone in ('"\\ud83d"', '"\\ude00\\ud83d"', '{"\\udc00": 1}', '["\\ud83dx"]'):
        with pytest.raises(JsonRefused):
            jsontext.loads(lone)


@pytest.mark.parametrize(("document", "reason"), [
    ('{"sub": "a", "sub": "b"}', "appears twice"),
    ('{"exp": NaN}', "NaN is not JSON"),
    ('[Infinity]', "Infinity is not JSON"),
    ('{"n": 1e400}', "too large"),
    ('[-1.5e999]', "too large"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a": ', "Expecting value"),
])
def test_what_json_loads_would_let_through_is_refused(document: str, reason: str) -> None:
    with pytest.raises(JsonRefused, match=reason):
        jsontext.loads(document)


def test_bytes_must_be_utf8_and_text_must_be_text() -> None:
    assert jsontext.loads(b'{"a": "\xc3\xa9"}') == {"a": "é"}
    for raw in (b'"\xed\xa0\x80"', b'"\xc0\xaf"', b'"\xff"'):
        with pytest.raises(JsonRefused, match="not UTF-8"):
            jsontext.loads(raw)
    with pytest.raises(JsonRefused, match="not text"):
        jsontext.loads('"\udcff"')  # a str that already holds one (a surrogate escape)
    assert jsontext.is_text("é☃\U0001F600") and not jsontext.is_text("a\ud800")
