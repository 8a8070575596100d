"""Two small pieces every answer goes through: the timestamp text (kept for the last second)
and the XML serializer (exact types first). Both held to the plain reference they replaced."""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.aws import xml
from broker.clock import iso8601

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 31),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)),
                                                  timezone(timedelta(hours=5, minutes=30))]))


@settings(max_examples=500)
@given(st.lists(MOMENTS, min_size=1, max_size=6))
def test_iso8601_is_strftime_whatever_came_before(moments: list[datetime]) -> None:
    # Runs of calls, repeated and interleaved: a kept second never answers for another one.
    for at in moments + moments[::-1] + moments:
        assert iso8601(at) == at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_same_second_other_zone_and_next_second() -> None:
    at = datetime(2026, 11, 29, 4, 5, 6, 999_999, tzinfo=UTC)
    assert iso8601(at) == "2026-11-29T04:05:06Z"
    assert iso8601(at.astimezone(timezone(timedelta(hours=2)))) == "2026-11-29T04:05:06Z"
    assert iso8601(at + timedelta(microseconds=1)) == "2026-11-29T04:05:07Z"
    assert iso8601(at.replace(year=2027)) == "2027-11-29T04:05:06Z"


def reference_text(value: str) -> str:
    """What xml.text must return: XML 1.0's excluded characters replaced, markup escaped."""
    kept = re.sub("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]", "\ufffd", value)
    return kept.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@settings(max_examples=2000)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text()
       | st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010)))
def test_text_is_the_reference(value: str) -> None:
    assert xml.text(value) == reference_text(value)


def test_text_of_controls_and_the_control() -> None:
    assert xml.text("a\tb\nc\rd\x7f") == "a\tb\nc\rd\x7f"  # all allowed: unchanged
    assert xml.text("a\x00b\x0bc\x1f") == "a\ufffdb\ufffdc\ufffd"
    assert xml.text("é\x08\ud800<") == "é\ufffd\ufffd&lt;"


class Sub(int):
    pass


def test_result_values_of_every_kind() -> None:
    at = datetime(2026, 11, 29, 4, 5, 6, tzinfo=UTC)
    result = {
        "S": "a<b&c>\x00", "T": True, "F": False, "N": 7, "Sub": Sub(3), "D": at,
        "M": {"Inner": "x", "Skipped": None}, "O": OrderedDict([("K", 1)]),
        "L": ["a", 2, {"K": "v"}], "U": (1,), "Skipped": None, "Other": 1.5,
    }
    body = xml.result_document("Act", "urn:ns", result, "rid").decode()
    assert body == (
        '<ActResponse xmlns="urn:ns"><ActResult>'
        "<S>a&lt;b&amp;c&gt;\ufffd</S><T>true</T><F>false</F><N>7</N><Sub>3</Sub>"
        "<D>2026-11-29T04:05:06Z</D><M><Inner>x</Inner></M><O><K>1</K></O>"
        "<L><member>a</member><member>2</member><member><K>v</K></member></L>"
        "<U><member>1</member></U><Other>1.5</Other>"
        "</ActResult><ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata>"
        "</ActResponse>")
