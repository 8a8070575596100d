"""Parsing XML that arrives from outside (SAML responses, IdP metadata) without trusting it.

``parse(data, limits)`` refuses before it parses anything that is larger than the limit, and
after parsing anything that declares a document type (no DTDs, so no entities, no entity
expansion, no external references), carries processing instructions, nests deeper than the
limit, or declares namespaces that canonicalization would multiply (a URI longer than the
limit, more in scope at one element than the limit). libxml2 is configured never to read the
network, never to load DTDs, never to substitute entities and never to lift its own size
guards. What comes back is a tree with no surprises.

Every refusal is an ``UnsafeXml`` whose message says what was wrong, for the caller to map to
its interface's error (``InvalidIdentityToken`` for a SAML response, ``InvalidInput`` for
metadata).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lxml import etree

from broker.errors import BrokerError


class UnsafeXml(BrokerError):
    """A document that is not well-formed, too large, too deep, or uses a refused feature."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_depth: int = 32
    max_elements: int = 5000
    # Canonicalization writes namespace declarations out again: exclusive c14n on every
    # element that uses one, so the canonical form of a bounded input is at most (elements +
    # attributes) x (URI + prefix) long; inclusive c14n, and exclusive c14n's InclusiveNamespaces
    # list, compare each element's namespaces in scope with its parent's, so its time grows with
    # elements x in-scope namespaces squared (3,000 declarations at the root of a 65 KB document
    # took 30 s). Honest SAML and metadata URIs are under 100 characters, and a federation's
    # aggregate keeps about 20 in scope.
    max_namespace_uri: int = 512
    max_namespaces: int = 64  # in scope at any one element


_local = threading.local()


def _parser() -> etree.XMLParser:
    """This thread's parser (an lxml parser must not be used by two threads at once)."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
            huge_tree=False, remove_comments=False, remove_pis=False, collect_ids=False,
        )
    return parser


def parse(data: bytes, limits: Limits, *, checked: bool = False) -> etree._Element:
    """Parse ``data`` within ``limits``. ``checked``: the bytes are the canonical form of part
    of a document this function already accepted (a signed element), so only the parser's own
    guards are needed again."""
    if len(data) > limits.max_bytes:
        raise UnsafeXml(f"the document is larger than {limits.max_bytes} bytes")
    # A DOCTYPE is refused outright, before libxml2 sees it: no DTD, internal or external, has
    # any business in a SAML message or in metadata.
    if not checked and b"<!" in data and (
            b"<!DOCTYPE" in data or b"<!doctype" in data or b"<!ENTITY" in data):
        raise UnsafeXml("the document declares a document type (DTDs are not accepted)")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"the document is not well-formed XML ({exc.msg})") from None
    except ValueError as exc:  # e.g. a unicode string with an encoding declaration
        raise UnsafeXml(f"the document is not well-formed XML ({exc})") from None
    if not checked:
        tree = root.getroottree()
        if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
            raise UnsafeXml("the document declares a document type (DTDs are not accepted)")
        _check_shape(root, limits)
    return root


def _check_shape(root: etree._Element, limits: Limits) -> None:
    """No processing instruction anywhere, at most ``max_elements`` elements, at most
    ``max_depth`` levels — counted by libxml2's XPath engine, not a Python walk, in one
    expression whose value has a bit for each rule broken. (No DTD means no entity can be
    declared, so none can be referenced: libxml2 refuses an undeclared one while parsing.)
    Then the namespace rules, by ``_check_namespaces``."""
    broken = int(_shape_check(limits)(root))
    if broken & _INSTRUCTION:
        raise UnsafeXml("the document carries a processing instruction")
    if broken & _TOO_DEEP:
        raise UnsafeXml(f"the document nests deeper than {limits.max_depth} elements")
    if broken & _TOO_MANY:
        raise UnsafeXml(f"the document has more than {limits.max_elements} elements")
    _check_namespaces(root, limits)


def _check_namespaces(root: etree._Element, limits: Limits) -> None:
    """No namespace URI longer than ``max_namespace_uri``, no element with more than
    ``max_namespaces`` declarations in scope (a prefix declared again below counts again).

    Not in the XPath expression: its namespace axis lists every element's namespaces in scope,
    comparing each with the others, so the check would cost what it guards against (14 s for
    ``//*[namespace::*[65]]`` on 3,000 declarations). lxml's walk reports each declaration once,
    where it is made, and when its element ends: its time is the number of declarations."""
    in_scope = 0
    for _, declared in etree.iterwalk(root, events=("start-ns", "end-ns")):
        if declared is None:  # end-ns: a declaration goes out of scope
            in_scope -= 1
            continue
        _, uri = declared
        if len(uri) > limits.max_namespace_uri:
            raise UnsafeXml(f"the document declares a namespace longer than "
                            f"{limits.max_namespace_uri} characters")
        in_scope += 1
        if in_scope > limits.max_namespaces:
            raise UnsafeXml(f"the document has more than {limits.max_namespaces} namespaces "
                            f"in scope at one element")


_INSTRUCTION, _TOO_DEEP, _TOO_MANY = 1, 2, 4


def _shape_check(limits: Limits) -> etree.XPath:
    """This thread's compiled check for ``limits`` (compiled XPath is kept per thread, as
    lxml asks)."""
    cache: dict[Limits, etree.XPath] = _local.__dict__.setdefault("checks", {})
    found = cache.get(limits)
    if found is None:
        # "/*/*/.../*" with max_depth + 1 steps exists only if some element is that deep.
        deep = "/" + "/".join(["*"] * (limits.max_depth + 1))
        found = cache[limits] = etree.XPath(
            f"number(boolean(/processing-instruction() | //processing-instruction())) "
            f"* {_INSTRUCTION} + number(boolean({deep})) * {_TOO_DEEP} "
            f"+ number(count(//*) > {limits.max_elements}) * {_TOO_MANY}")
    return found


def text_of(element: etree._Element) -> str:
    """An element's whole text content, comments excluded but never cut short by them (the
    comment-injection attack relies on parsers that return only the text before a comment)."""
    # itertext() yields the element's own text and its descendants' texts and tails (a
    # comment's tail included), never the element's own tail and never a comment's content.
    return "".join(element.itertext())


def children_by_tag(parent: etree._Element) -> dict[object, list[etree._Element]]:
    """``parent``'s children by tag, each group in document order: one walk over the children
    where asking for each name would be a walk per name. (Comments and processing instructions
    are grouped under their own tags, which are not strings.)"""
    found: dict[object, list[etree._Element]] = {}
    for child in parent:
        tag = child.tag
        group = found.get(tag)
        if group is None:
            found[tag] = [child]
        else:
            group.append(child)
    return found
