"""broker.idp.xmlsafe: the limits and refusals of parsing untrusted XML, each at its edge — the
largest document that passes beside the smallest that does not."""

from __future__ import annotations

import pytest

from broker.idp import saml, xmlsafe
from broker.idp.metadata import MetadataError, parse_metadata
from broker.idp.xmlsafe import Limits, UnsafeXml
from tests.saml_metadata import ENTITY_ID, entity, idp_descriptor

LIMITS = Limits(max_bytes=10_000, max_depth=5, max_elements=20)


def nested(depth: int) -> bytes:
    """A root and depth - 1 elements inside it, one in another: ``depth`` levels."""
    return b"<a>" * depth + b"</a>" * depth


def wide(elements: int) -> bytes:
    """A root holding elements - 1 children: ``elements`` elements."""
    return b"<r>" + b"<c/>" * (elements - 1) + b"</r>"


def uri(length: int) -> str:
    """An absolute namespace URI of ``length`` characters."""
    return "urn:" + "u" * (length - 4)


def declaring(count: int, prefix: str = "p") -> str:
    """``count`` namespace declarations, each of its own prefix."""
    return "".join(f' xmlns:{prefix}{i}="urn:n:{i}"' for i in range(count))


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


LONG_URI = "the document declares a namespace longer than 512 characters"


@pytest.mark.parametrize("template", [
    '<r xmlns:a="{uri}"><a:x/></r>',  # a prefix, used
    '<r xmlns:a="{uri}"/>',  # declared, never used
    '<r xmlns="{uri}"/>',  # the default namespace
    '<r><c><c xmlns:a="{uri}"/></c></r>',  # below the root
])
def test_namespace_uris_are_allowed_up_to_the_limit(template: str) -> None:
    assert xmlsafe.parse(template.format(uri=uri(512)).encode(), LIMITS) is not None
    assert refusal(template.format(uri=uri(513)).encode()) == LONG_URI


def test_the_reviewed_canonicalization_bomb_is_refused() -> None:
    """One long URI at the root, used by every element: 72 KB that exclusive canonicalization
    writes out as 119 MB, the declaration once per element. Within the size and element
    limits of a SAML response; refused by the URI's length alone."""
    bomb = f'<r xmlns:a="{uri(60_000)}">{"<a:x/>" * 1_990}</r>'.encode()
    assert len(bomb) < saml.LIMITS.max_bytes
    assert refusal(bomb, saml.LIMITS) == LONG_URI
    honest = bomb.replace(uri(60_000).encode(), uri(512).encode())
    assert len(xmlsafe.parse(honest, saml.LIMITS)) == 1_990


TOO_WIDE = "the document has more than 64 namespaces in scope at one element"


def test_namespaces_in_scope_are_allowed_up_to_the_limit() -> None:
    assert xmlsafe.parse(f"<r{declaring(64)}><c/></r>".encode(), LIMITS) is not None
    assert refusal(f"<r{declaring(65)}><c/></r>".encode()) == TOO_WIDE
    # Declarations at several levels add up: 40 at the root and 25 on its child are 65.
    assert xmlsafe.parse(f"<r{declaring(40)}><c{declaring(24, 'q')}/></r>".encode(),
                         LIMITS) is not None
    assert refusal(f"<r{declaring(40)}><c{declaring(25, 'q')}/></r>".encode()) == TOO_WIDE


def test_namespaces_are_counted_in_scope_not_in_the_whole_document() -> None:
    # Some identity providers declare xs and xsi again on every AttributeValue: hundreds of
    # declarations in one document, never more than a few in scope.
    roomy = Limits(max_bytes=100_000, max_elements=20)
    siblings = f"<r>{f'<c{declaring(64)}/>' * 19}</r>".encode()
    assert len(xmlsafe.parse(siblings, roomy)) == 19  # 1,216 declarations
    assert refusal(siblings.replace(b"<c ", b"<c xmlns:more='urn:m' ", 1), roomy) == TOO_WIDE


def test_namespace_rules_come_after_the_element_rules() -> None:
    too_many = f'<r xmlns:a="{uri(600)}">{"<c/>" * 25}</r>'.encode()
    assert refusal(too_many) == "the document has more than 20 elements"
    assert refusal(too_many.replace(b"<c/>", b"", 6)) == LONG_URI  # 20 elements


def test_limits_set_their_own_namespace_rules() -> None:
    looser = Limits(max_bytes=10_000, max_namespace_uri=1_000, max_namespaces=100)
    assert xmlsafe.parse(f'<r xmlns:a="{uri(1_000)}"/>'.encode(), looser) is not None
    assert refusal(f'<r xmlns:a="{uri(1_001)}"/>'.encode(), looser) == \
        "the document declares a namespace longer than 1000 characters"
    assert xmlsafe.parse(f"<r{declaring(100)}/>".encode(), looser) is not None
    assert refusal(f"<r{declaring(101)}/>".encode(), looser) == \
        "the document has more than 100 namespaces in scope at one element"


def test_metadata_is_refused_for_its_namespaces_with_the_reason() -> None:
    # parse_metadata reads through its own Limits, which keep the default namespace rules.
    def with_extension(declarations: str) -> str:
        return entity(f"<md:Extensions><e{declarations}/></md:Extensions>" + idp_descriptor())

    assert parse_metadata(with_extension(f' xmlns:x="{uri(512)}"')).entity_id == ENTITY_ID
    with pytest.raises(MetadataError) as exc:
        parse_metadata(with_extension(f' xmlns:x="{uri(513)}"'))
    assert exc.value.reason == LONG_URI
    # md and ds are declared at the root: 62 more are 64 in scope, 63 more are too many.
    assert parse_metadata(with_extension(declaring(62))).entity_id == ENTITY_ID
    with pytest.raises(MetadataError) as exc:
        parse_metadata(with_extension(declaring(63)))
    assert exc.value.reason == TOO_WIDE
