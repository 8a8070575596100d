"""An assertion's attributes as AWS reads them: every value of a name, across repeated
Attribute elements; the Role attribute's values as ``role ARN,provider ARN`` in either order,
spaces around each ARN allowed, anything else skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from broker.idp.saml import VerifiedAssertion
from broker.sts.saml import RolePair, pairs_of

ROLE = "arn:aws:iam::111122223333:role/engineers"
OTHER_ROLE = "arn:aws:iam::111122223333:role/admins"
PROVIDER = "arn:aws:iam::111122223333:saml-provider/corp"
PAIR = RolePair(ROLE, PROVIDER)


@pytest.mark.parametrize("value", [
    f"{ROLE},{PROVIDER}",
    f"{PROVIDER},{ROLE}",
    f" {ROLE} , {PROVIDER} ",
    f"{PROVIDER}, {ROLE}",
])
def test_either_order_and_spaces(value: str) -> None:
    assert pairs_of([value]) == (PAIR,)


@pytest.mark.parametrize("value", [
    f"{ROLE},{OTHER_ROLE}",  # two roles
    f"{PROVIDER},{PROVIDER}",  # two providers
    f"{ROLE},{PROVIDER},{PROVIDER}",  # three parts
    ROLE,  # one part
    f"{ROLE};{PROVIDER}",
    f"{ROLE},arn:aws:iam::1111:saml-provider/corp",  # not a twelve-digit account
    f"{ROLE},arn:aws:iam::111122223333:saml-provider/",  # no name
    f"{ROLE}\nx,{PROVIDER}",  # a line break inside an ARN
    f"arn:aws:sts::111122223333:role/engineers,{PROVIDER}",  # not IAM
    "",
])
def test_values_that_are_not_a_pair_are_skipped(value: str) -> None:
    assert pairs_of([value, f"{OTHER_ROLE},{PROVIDER}"]) == (RolePair(OTHER_ROLE, PROVIDER),)


def test_pairs_keep_their_order_and_repeat_once() -> None:
    values = [f"{ROLE},{PROVIDER}", f"{OTHER_ROLE},{PROVIDER}", f"{PROVIDER},{ROLE}"]
    assert pairs_of(values) == (PAIR, RolePair(OTHER_ROLE, PROVIDER))


def test_other_partitions_are_arns_too() -> None:
    role = "arn:aws-us-gov:iam::111122223333:role/engineers"
    provider = "arn:aws-us-gov:iam::111122223333:saml-provider/corp"
    assert pairs_of([f"{provider},{role}"]) == (RolePair(role, provider),)


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def assertion(*attributes: tuple[str, tuple[str, ...]]) -> VerifiedAssertion:
    now = NOW
    return VerifiedAssertion(
        assertion_id="_a", issuer="https://idp.example.test", subject="alice",
        subject_format=None, recipient="https://broker.example.test/saml", audiences=(),
        not_on_or_after=now, issue_instant=now, response_id="_r", in_response_to=None,
        session_not_on_or_after=None, encrypted=False, attributes=attributes)


def test_values_gather_every_attribute_of_a_name_in_order() -> None:
    found = assertion(("a", ("1",)), ("b", ("x",)), ("a", ("2", "3")), ("c", ()))
    assert found.values("a") == ("1", "2", "3")
    assert found.values("a") == ("1", "2", "3")  # asked again: the same
    assert found.values("b") == ("x",)
    assert found.values("c") == ()
    assert found.values("A") == ()  # names are exact
    assert found.has("c") and not found.has("d")


def test_values_leave_equality_alone() -> None:
    one = assertion(("a", ("1",)))
    other = assertion(("a", ("1",)))
    one.values("a")  # keeps its grouping in the instance
    assert one == other and hash(one) == hash(other)
