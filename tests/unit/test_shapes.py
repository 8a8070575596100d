from __future__ import annotations

import pytest

from broker.aws import shapes
from broker.aws.errors import ValidationError
from broker.aws.shapes import Integer, ListOf, String, optional, required, struct
from broker.iam.model import CreateUserRequest
from broker.sts.model import GetFederationTokenRequest
from broker.sts.model import arnType as sts_arn


@pytest.mark.parametrize(("pattern", "good", "bad"), [
    (r"[\w+=,.@-]+", ["alice", "a.b@c-d", "A_1"], ["é", "a b", "a!"]),
    (r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+", ["héllo wörld", "日本", "a:b/c"], ["a\tb", "a!", "a*"]),
    (r"[\d]*", ["123456", ""], ["12a"]),
    (sts_arn.pattern, ["any text ☃", "emoji \U0001F600"], ["\x01", "a\x00b"]),
    (r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)", ["/", "/a/b/"], ["a/", "/a", "/ /"]),
])
def test_java_patterns_mean_what_they_mean_in_java(pattern: str, good: list[str],
                                                   bad: list[str]) -> None:
    compiled = shapes.compile_pattern(pattern)
    for text in good:
        assert compiled.fullmatch(text), text
    for text in bad:
        assert not compiled.fullmatch(text), text


def test_flat_lists_of_structures() -> None:
    parsed = shapes.parse(GetFederationTokenRequest, {
        "Name": "bob",
        "Tags.member.2.Key": "b", "Tags.member.2.Value": "2",
        "Tags.member.1.Key": "a", "Tags.member.1.Value": "1",
        "PolicyArns.member.1.arn": "arn:aws:iam::123456789012:policy/p",
        "DurationSeconds": "900",
    })
    assert parsed == {
        "Name": "bob",
        "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}],
        "PolicyArns": [{"arn": "arn:aws:iam::123456789012:policy/p"}],
        "DurationSeconds": 900,
    }


def test_empty_list_is_sent_as_bare_name() -> None:
    assert shapes.parse(GetFederationTokenRequest, {"Name": "bob", "Tags": ""})["Tags"] == []


def test_every_fault_is_reported_in_aws_words() -> None:
    with pytest.raises(ValidationError) as info:
        shapes.parse(CreateUserRequest, {"UserName": "", "Path": "x",
                                         "Tags.member.1.Key": "k"})
    assert info.value.message == (
        "4 validation errors detected: "
        "Value 'x' at 'path' failed to satisfy constraint: Member must satisfy regular "
        r"expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F); "
        "Value '' at 'userName' failed to satisfy constraint: Member must satisfy regular "
        r"expression pattern: [\w+=,.@-]+; "
        "Value '' at 'userName' failed to satisfy constraint: Member must have length "
        "greater than or equal to 1; "
        "Value null at 'tags.1.member.value' failed to satisfy constraint: "
        "Member must not be null"
    )
    assert info.value.code == "ValidationError" and info.value.status == 400


@pytest.mark.parametrize(("shape", "raw", "fault"), [
    (Integer(min=900, max=129600), "899", "Member must have value greater than or equal to 900"),
    (Integer(min=900, max=129600), "129601", "Member must have value less than or equal to 129600"),
    (Integer(), "12x", "Member must be an integer"),
    (String(max=3), "abcd", "Member must have length less than or equal to 3"),
    (String(enum=("Active", "Inactive")), "On",
     "Member must satisfy enum value set: [Active, Inactive]"),
    (ListOf(String(), max=1), None, "Member must have length less than or equal to 1"),
])
def test_constraint_messages(shape: shapes.Shape, raw: str | None, fault: str) -> None:
    params = {"X.member.1": "a", "X.member.2": "b"} if raw is None else {"X": raw}
    with pytest.raises(ValidationError) as info:
        shapes.parse(struct(optional("X", shape)), params)
    assert info.value.message.startswith("1 validation error detected: Value ")
    assert info.value.message.endswith(fault)


def test_missing_required_member() -> None:
    with pytest.raises(ValidationError, match="Value null at 'userName' failed to satisfy "
                       "constraint: Member must not be null"):
        shapes.parse(struct(required("UserName", String())), {})


def test_bad_list_index_is_a_fault_not_a_crash() -> None:
    with pytest.raises(ValidationError, match="list index"):
        shapes.parse(GetFederationTokenRequest, {"Name": "bob", "Tags.member.x.Key": "a"})
