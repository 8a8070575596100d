"""broker.idp.xmlsafe: the limits and refusals of parsing untrusted XML, each at its edge — the
largest document that passes beside the smallest that does not."""

from __future__ import annotations

import pytest

from broker.idp import xmlsafe
from broker.idp.xmlsafe import Limits, UnsafeXml

LIMITS = Limits(max_bytes=10_000, max_depth=5, max_elements=20)


def nested(depth: int) -> bytes:
    """A root and depth - 1 elements inside it, one in another: ``depth`` levels."""
    return b"<a>" * depth + b"</a>" * depth


def wide(elements: int) -> bytes:
    """A root holding elements - 1 children: ``elements`` elements."""
    return b"<r>" + b"<c/>" * (elements - 1) + b"</r>"


def refusal(data: bytes, limits: Limits = LIMITS) -> str:
    with pytest.raises(UnsafeXml) as exc:
        xmlsafe.parse(data, limits)
    return str(exc.value)


def test_depth_is_allowed_up_to_the_limit() -> None:
    assert xmlsafe.parse(nested(5), LIMITS).tag == "a"
    assert refusal(nested(6)) == "the document nests deeper than 5 elements"


def test_elements_are_allowed_up_to_the_limit() -> None:
    assert len(xmlsafe.parse(wide(20), LIMITS)) == 19
    assert refusal(wide(21)) == "the document has more than 20 elements"


def test_size_is_allowed_up_to_the_limit() -> None:
    padding = b"<r>" + b" " * (10_000 - 7) + b"</r>"
    assert len(padding) == 10_000
    assert xmlsafe.parse(padding, LIMITS).tag == "r"
    assert refusal(padding[:-4] + b" </r>") == "the document is larger than 10000 bytes"


@pytest.mark.parametrize("document", [
    b"<?pi data?><r/>",
    b"<r><?pi data?></r>",
    b"<r><c><?pi data?></c></r>",
    b"<r/><?pi data?>",
])
def test_a_processing_instruction_anywhere_is_refused(document: bytes) -> None:
    assert xmlsafe.parse(document.replace(b"<?pi data?>", b"<!-- c -->"), LIMITS) is not None
    assert refusal(document) == "the document carries a processing instruction"


def test_the_xml_declaration_is_not_an_instruction() -> None:
    assert xmlsafe.parse(b'<?xml version="1.0" encoding="UTF-8"?><r/>', LIMITS).tag == "r"


@pytest.mark.parametrize(("document", "honest"), [
    (b"<!DOCTYPE r><r/>", b"<r/>"),
    (b"<!doctype r><r/>", b"<r/>"),
    (b'<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>', b"<r>x</r>"),
    (b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>', b"<r/>"),
])
def test_a_document_type_is_refused(document: bytes, honest: bytes) -> None:
    assert xmlsafe.parse(honest, LIMITS).tag == "r"  # the same document without one
    assert refusal(document) == "the document declares a document type (DTDs are not accepted)"


def test_comments_and_cdata_are_not_document_types() -> None:
    # Both begin with "<!", as a document type does.
    assert xmlsafe.text_of(xmlsafe.parse(b"<r><!-- c --><![CDATA[x]]></r>", LIMITS)) == "x"


def test_each_broken_rule_is_reported_first_instructions_then_depth_then_count() -> None:
    deep_and_wide = b"<r>" + b"<c/>" * 25 + nested(6) + b"</r>"
    assert refusal(deep_and_wide) == "the document nests deeper than 5 elements"
    assert refusal(b"<?pi x?>" + deep_and_wide) == \
        "the document carries a processing instruction"


def test_limits_are_kept_apart() -> None:
    # The compiled check of one set of limits is never used for another.
    looser = Limits(max_bytes=10_000, max_depth=8, max_elements=40)
    assert xmlsafe.parse(nested(7), looser).tag == "a"
    assert refusal(nested(7)) == "the document nests deeper than 5 elements"
    assert xmlsafe.parse(wide(30), looser).tag == "r"
    assert refusal(wide(30)) == "the document has more than 20 elements"


def test_checked_bytes_skip_only_the_shape_rules() -> None:
    # Canonical bytes of a signed element, already accepted, are parsed again with only the
    # parser's own guards: the size limit still holds.
    assert xmlsafe.parse(nested(6), LIMITS, checked=True).tag == "a"
    with pytest.raises(UnsafeXml):
        xmlsafe.parse(b"<r>" + b" " * 10_000 + b"</r>", LIMITS, checked=True)


def test_not_well_formed_is_refused() -> None:
    assert xmlsafe.parse(b"<r>&amp;</r>", LIMITS).text == "&"
    assert refusal(b"<r>").startswith("the document is not well-formed XML")
    assert refusal(b"<r>&undeclared;</r>").startswith("the document is not well-formed XML")
