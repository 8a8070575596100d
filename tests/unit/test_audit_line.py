"""The audit line is exactly the JSON json.dumps writes for the event's members (alphabetical,
compact, ASCII with escapes), whatever the values hold: quotes, backslashes, control
characters, line separators, characters beyond the BMP. A reader parses every line back to
the same values, and no value can break out of its member or its line."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import AuditEvent
from broker.clock import iso8601

OPTIONAL = [f.name for f in fields(AuditEvent)
            if f.name not in ("time", "event", "outcome", "request_id")]
VALUE = st.none() | st.text(max_size=40)


@settings(max_examples=500)
@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30),
       st.fixed_dictionaries(dict.fromkeys(OPTIONAL, VALUE)))
def test_line_is_what_json_dumps_writes(event: str, request_id: str,
                                        optional: dict[str, str | None]) -> None:
    at = datetime(2026, 11, 29, 4, 5, 6, 789, tzinfo=UTC)
    e = AuditEvent(time=at, event=event, outcome="issued", request_id=request_id, **optional)
    members = {"time": iso8601(at), "type": "broker.audit", "event": event,
               "outcome": "issued", "request_id": request_id,
               **{k: v for k, v in optional.items() if v is not None}}
    expected = json.dumps(dict(sorted(members.items())), separators=(",", ":"))
    line = e.line()
    assert line == expected
    assert "\n" not in line and line.isascii()
    assert json.loads(line) == members


def test_a_value_that_is_not_text_is_written_as_json_dumps_would() -> None:
    at = datetime(2026, 11, 29, 4, 5, 6, tzinfo=UTC)
    e = AuditEvent(time=at, event="E", outcome="issued", request_id="r",
                   source_ip=None, user_agent=None, subject=7, error_code=True)  # type: ignore[arg-type]
    assert json.loads(e.line()) == {"time": iso8601(at), "type": "broker.audit", "event": "E",
                                    "outcome": "issued", "request_id": "r", "subject": 7,
                                    "error_code": True}
