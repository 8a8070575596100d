"""Every implemented STS and IAM action against botocore's service models.

Static: each declared input shape has exactly the model's members, types, required members,
lengths, ranges, patterns and enums. Over the wire: for every constraint the model states, a
real server refuses a value that breaks it with AWS's ValidationError wording, and the XML of
every result uses only elements the model's output shape knows.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import botocore.session
import httpx
import pytest

from broker.aws import shapes
from broker.aws.query import Operation
from broker.iam import api as iam_api
from broker.sts import api as sts_api
from tests.helpers import Broker, signed_request

SESSION = botocore.session.get_session()
MODELS = {"sts": SESSION.get_service_model("sts"), "iam": SESSION.get_service_model("iam")}
OPERATIONS: list[Operation] = [
    *sts_api.operations(None),  # type: ignore[arg-type]  # handlers are not called here
    *iam_api.operations(None, None),  # type: ignore[arg-type]
]
IDS = [f"{op.service.name}:{op.name}" for op in OPERATIONS]


def model_of(op: Operation) -> Any:
    return MODELS[op.service.name].operation_model(op.name)


# -- static comparison --------------------------------------------------------------------------


def compare(ours: shapes.Shape, theirs: Any, where: str) -> None:
    assert ours.type_name == theirs.type_name, f"{where}: type"
    meta = theirs.metadata
    if isinstance(ours, shapes.String):
        assert (ours.min, ours.max, ours.pattern) == (
            meta.get("min"), meta.get("max"), meta.get("pattern")), where
        assert ours.enum == (tuple(theirs.enum) if theirs.enum else None), f"{where}: enum"
    elif isinstance(ours, shapes.Integer):
        assert (ours.min, ours.max) == (meta.get("min"), meta.get("max")), where
    elif isinstance(ours, shapes.ListOf):
        assert (ours.min, ours.max) == (meta.get("min"), meta.get("max")), where
        compare(ours.member, theirs.member, f"{where}.member")
    elif isinstance(ours, shapes.Structure):
        assert [m.name for m in ours.members] == list(theirs.members), f"{where}: members"
        required = {m.name for m in ours.members if m.required}
        assert required == set(theirs.required_members), f"{where}: required"
        for member in ours.members:
            compare(member.shape, theirs.members[member.name], f"{where}.{member.name}")


@pytest.mark.parametrize("op", OPERATIONS, ids=IDS)
def test_declared_input_is_the_model(op: Operation) -> None:
    model = model_of(op)
    assert op.service.version == MODELS[op.service.name].api_version
    assert op.service.namespace == MODELS[op.service.name].metadata["xmlNamespace"]
    if model.input_shape is None:
        assert op.input.members == ()
    else:
        compare(op.input, model.input_shape, op.name)


# -- constraints enforced over the wire ---------------------------------------------------------

VALID = {  # a valid value for every member a request needs
    "UserName": "alice", "Name": "fed-user", "AccessKeyId": "AKIAAAAAAAAAAAAAAAAA",
    "Status": "Active", "Key": "k", "Value": "v", "arn": "arn:aws:iam::aws:policy/Pol",
}


def filler(shape: shapes.String, length: int) -> str | None:
    """A string of the given length that satisfies the shape's pattern, if one is easy."""
    pattern = shapes.compile_pattern(shape.pattern) if shape.pattern else None
    candidates = [c * length for c in "a1"] + (["/" + "a" * (length - 2) + "/"]
                                                 if length >= 2 else [])
    for text in candidates:
        if pattern is None or pattern.fullmatch(text):
            return text
    return None


def breaker(shape: shapes.String) -> str | None:
    """A string of acceptable length that the shape's pattern refuses."""
    assert shape.pattern is not None
    pattern = shapes.compile_pattern(shape.pattern)
    length = max(shape.min or 1, 1)
    for c in ["!", "\x01", "*", "é", "a", " "]:
        if not pattern.fullmatch(c * length):
            return c * length
    return None


def valid_params(op: Operation) -> dict[str, str]:
    params = {"Action": op.name, "Version": op.service.version}
    for member in op.input.members:
        if member.required:
            params[member.name] = VALID[member.name]
    return params


def cases() -> list[Any]:
    """(operation, extra params, member to drop, expected fault) for every constraint."""
    found = []
    for op in OPERATIONS:
        for member in op.input.members:
            at = member.name[0].lower() + member.name[1:]
            shape = member.shape
            wire = member.name
            if isinstance(shape, shapes.ListOf):
                if shape.max is not None:
                    item = shape.member
                    assert isinstance(item, shapes.Structure)
                    extra = {}
                    for i in range(1, shape.max + 2):
                        for sub in item.members:
                            extra[f"{wire}.member.{i}.{sub.name}"] = f"{VALID[sub.name]}{i}"
                    found.append((op, extra, None,
                                  f"at '{at}' failed to satisfy constraint: Member must have "
                                  f"length less than or equal to {shape.max}"))
                item = shape.member
                if isinstance(item, shapes.Structure):
                    for sub in item.members:
                        sub_at = f"{at}.1.member.{sub.name[0].lower() + sub.name[1:]}"
                        base = {f"{wire}.member.1.{s.name}": VALID[s.name] for s in item.members}
                        for extra_value, fault in string_faults(sub.shape):
                            found.append((op, {**base, f"{wire}.member.1.{sub.name}":
                                               extra_value}, None, f"at '{sub_at}' {fault}"))
                        if sub.required:
                            dropped = {k: v for k, v in base.items() if not k.endswith(sub.name)}
                            found.append((op, dropped, None, f"Value null at '{sub_at}' "
                                          "failed to satisfy constraint: Member must not be null"))
                continue
            if member.required:
                found.append((op, {}, member.name, f"Value null at '{at}' failed to satisfy "
                              "constraint: Member must not be null"))
            if isinstance(shape, shapes.Integer):
                if shape.min is not None:
                    found.append((op, {wire: str(shape.min - 1)}, None,
                                  f"Value '{shape.min - 1}' at '{at}' failed to satisfy "
                                  f"constraint: Member must have value greater than or equal "
                                  f"to {shape.min}"))
                if shape.max is not None:
                    found.append((op, {wire: str(shape.max + 1)}, None,
                                  f"Value '{shape.max + 1}' at '{at}' failed to satisfy "
                                  f"constraint: Member must have value less than or equal "
                                  f"to {shape.max}"))
            elif isinstance(shape, shapes.String):
                for value, fault in string_faults(shape):
                    found.append((op, {wire: value}, None, f"at '{at}' {fault}"))
    return found


def string_faults(shape: shapes.Shape) -> list[tuple[str, str]]:
    assert isinstance(shape, shapes.String)
    faults = []
    if shape.max is not None:
        value = filler(shape, shape.max + 1)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must have length "
                           f"less than or equal to {shape.max}"))
    if shape.min:
        value = filler(shape, shape.min - 1)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must have length "
                           f"greater than or equal to {shape.min}"))
    if shape.pattern is not None:
        value = breaker(shape)
        if value is not None:
            faults.append((value, "failed to satisfy constraint: Member must satisfy regular "
                           f"expression pattern: {shape.pattern}"))
    if shape.enum is not None:
        faults.append(("NotAValue", "failed to satisfy constraint: Member must satisfy enum "
                       f"value set: [{', '.join(shape.enum)}]"))
    return faults


CASES = cases()


def test_every_operation_has_constraint_cases() -> None:
    constrained = {op.name for op in OPERATIONS if op.input.members}
    assert {c[0].name for c in CASES} == constrained
    assert len(CASES) > 60


@pytest.mark.parametrize(("op", "extra", "drop", "fault"), CASES,
                         ids=[f"{c[0].name}-{i}" for i, c in enumerate(CASES)])
def test_constraint_is_enforced_with_aws_wording(broker: Broker, op: Operation,
                                                 extra: dict[str, str], drop: str | None,
                                                 fault: str) -> None:
    params = {**valid_params(op), **extra}
    if drop is not None:
        del params[drop]
    method, url, headers, body = signed_request(broker.url, params, broker.root,
                                                service=op.service.name)
    resp = httpx.request(method, url, headers=headers, content=body)
    root = ElementTree.fromstring(resp.content)
    ns = {"a": op.service.namespace}
    assert resp.status_code == 400, resp.text
    assert root.findtext("a:Error/a:Code", namespaces=ns) == "ValidationError"
    message = root.findtext("a:Error/a:Message", namespaces=ns) or ""
    assert message.startswith(("1 validation error detected: ",
                               "2 validation errors detected: ")), message
    assert fault in message, message


# -- results use only what the output shapes know ----------------------------------------------


def check_xml(element: ElementTree.Element, shape: Any, where: str,
              absent: dict[str, set[str]] | None = None) -> None:
    """``absent``: required members AWS's own answer leaves out too, by place."""
    absent = absent or {}
    if shape.type_name == "structure":
        names = [child.tag.split("}")[1] for child in element]
        unknown = set(names) - set(shape.members)
        assert not unknown, f"{where}: elements the model does not know: {unknown}"
        missing = set(shape.required_members) - set(names) - absent.get(where, set())
        assert not missing, f"{where}: required elements missing: {missing}"
        for child, name in zip(element, names, strict=True):
            check_xml(child, shape.members[name], f"{where}.{name}", absent)
    elif shape.type_name == "list":
        for child in element:
            assert child.tag.split("}")[1] == "member", where
            check_xml(child, shape.member, f"{where}.member")
    else:
        assert len(element) == 0, f"{where}: a scalar with children"
        text = element.text or ""
        if shape.type_name == "timestamp":
            assert text.endswith("Z") and "T" in text, f"{where}: {text}"
        elif shape.type_name == "integer":
            int(text)
        elif shape.type_name == "boolean":
            assert text in ("true", "false"), where


def test_results_match_output_shapes(broker: Broker) -> None:
    calls = [
        ("sts", {"Action": "GetCallerIdentity"}),
        ("sts", {"Action": "GetSessionToken", "DurationSeconds": "900"}),
        ("sts", {"Action": "GetFederationToken", "Name": "shape-check",
                 "Policy": '{"Statement":[]}', "Tags.member.1.Key": "a",
                 "Tags.member.1.Value": "b"}),
        ("sts", {"Action": "GetAccessKeyInfo", "AccessKeyId": broker.root.access_key_id}),
        ("iam", {"Action": "CreateUser", "UserName": "shape-check", "Path": "/x/",
                 "Tags.member.1.Key": "a", "Tags.member.1.Value": "b"}),
        ("iam", {"Action": "GetUser", "UserName": "shape-check"}),
        ("iam", {"Action": "GetUser"}),  # the root user
        ("iam", {"Action": "ListUsers", "MaxItems": "1"}),
        ("iam", {"Action": "CreateAccessKey", "UserName": "shape-check"}),
        ("iam", {"Action": "ListAccessKeys", "UserName": "shape-check"}),
        ("iam", {"Action": "GetAccessKeyLastUsed", "AccessKeyId": broker.root.access_key_id}),
    ]
    seen = set()
    for service, params in calls:
        model = MODELS[service]
        full = {**params, "Version": model.api_version}
        method, url, headers, body = signed_request(broker.url, full, broker.root,
                                                    service=service)
        resp = httpx.request(method, url, headers=headers, content=body)
        assert resp.status_code == 200, resp.text
        root = ElementTree.fromstring(resp.content)
        action = params["Action"]
        op = model.operation_model(action)
        result = root.find(f"{{{model.metadata['xmlNamespace']}}}{action}Result")
        assert result is not None, resp.text
        # GetUser for the root user has no path and no user name, on AWS as here.
        absent = {"GetUser.User": {"Path", "UserName"}} if params == {"Action": "GetUser"} \
            else None
        check_xml(result, op.output_shape, action, absent)
        seen.add(action)
    outputs = {op.name for op in OPERATIONS if model_of(op).output_shape is not None}
    assert outputs <= seen
