"""The one decoder of query strings and form bodies (aws/http.py)."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.aws.http import parse_query

# Rich in escapes and in the characters the fast path for base64 values and ARNs rewrites.
TEXT = st.text(alphabet="%+/=:2BbFf3DdAa05Z é&;", max_size=24)


def reference(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")


@settings(max_examples=3000)
@given(TEXT)
def test_values_decode_as_the_standard_library_does(text: str) -> None:
    raw = f"Name={text.replace('&', '%26')}"
    try:
        expected = reference(text.replace("&", "%26"))
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            parse_query(raw)
        return
    assert parse_query(raw) == [("Name", expected)]


def test_base64_values_and_other_escapes() -> None:
    assert parse_query("A=ab%2Bc%2Fd%3D%3D&B=x%2by%2fz%3d") == [("A", "ab+c/d=="),
                                                                ("B", "x+y/z=")]
    assert parse_query("R=arn%3Aaws%3aiam%3A%3A1%3Arole%2Fci") == [("R", "arn:aws:iam::1:role/ci")]
    # An escaped "%" before "3A" is a "%" and the text "3A", not a colon.
    assert parse_query("R=a%253Ab") == [("R", "a%3Ab")]
    # Another escape anywhere: everything decoded the general way, "+" still a space.
    assert parse_query("A=a%2Bb+c%41%25") == [("A", "a+b cA%")]
    with pytest.raises(UnicodeDecodeError):
        parse_query("A=%2B%FF")
