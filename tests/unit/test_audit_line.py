"""The audit line is exactly the JSON json.dumps writes for the event's members (alphabetical,
compact, ASCII with escapes), whatever the values hold: quotes, backslashes, control
characters, line separators, characters beyond the BMP. A reader parses every line back to
the same values, and no value can break out of its member or its line."""

from __future__ import annotations

import json
import threading
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import AuditEvent, FileSink
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


def test_the_file_sink_appends_whole_lines_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    path.parent.mkdir()
    path.write_text('{"earlier":"line"}\n')  # appended to, never truncated
    sink = FileSink(path)
    at = datetime(2026, 11, 29, 4, 5, 6, tzinfo=UTC)
    events = [[AuditEvent(time=at, event="E", outcome="issued", request_id=f"{t}-{i}",
                          source_ip=None, user_agent="x" * (i % 50)) for i in range(200)]
              for t in range(8)]
    threads = [threading.Thread(target=lambda batch=batch: [sink.emit(e) for e in batch])
               for batch in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    sink.close()  # closing twice is harmless
    lines = path.read_text().splitlines()
    assert lines[0] == '{"earlier":"line"}'
    assert sorted(lines[1:]) == sorted(e.line() for batch in events for e in batch)
    with pytest.raises(ValueError, match="closed"):
        sink.emit(events[0][0])  # nothing is written after closing
