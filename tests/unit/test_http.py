"""The one decoder of query strings and form bodies (aws/http.py)."""

from __future__ import annotations

import base64
from urllib.parse import unquote_to_bytes, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.aws.http import parse_query

# Rich in escapes and in the characters the fast paths for base64 values and ARNs rewrite;
# short values and values long enough for the one-split way (aws/http.py's _SHORT).
ALPHABET = "%+/=:2BbFf3DdAa05Z é&;7e8"
PIECES = ["%2B", "%2f", "%3D", "%3a", "%7E", "%25", "a", "Z", "+", "/", "=", "0"]
TEXT = (st.text(alphabet=ALPHABET, max_size=24)
        | st.text(alphabet=ALPHABET, min_size=250, max_size=320)
        | st.lists(st.sampled_from(PIECES), min_size=130, max_size=160).map("".join))


def reference(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")


@settings(max_examples=2000)
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


@settings(max_examples=300)
@given(st.binary(min_size=200, max_size=6000))
def test_urlencoded_base64_decodes_exactly(data: bytes) -> None:
    value = base64.b64encode(data).decode()
    assert parse_query(urlencode({"SAMLAssertion": value})) == [("SAMLAssertion", value)]


def test_long_values_with_other_escapes_go_the_general_way() -> None:
    long = "A" * 300
    assert parse_query(f"A={long}%2B%3a%7e") == [("A", long + "+:~")]
    assert parse_query(f"A={long}%C3%A9+x") == [("A", long + "é x")]
    assert parse_query(f"A={long}%2B%zz%") == [("A", long + "+%zz%")]
    with pytest.raises(UnicodeDecodeError):
        parse_query(f"A={long}%2B%FF")


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
