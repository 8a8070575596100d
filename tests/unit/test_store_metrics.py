"""What the entity store's watch counts as a failed round trip: a store that refused or
could not answer, never a unique key that was taken (AlreadyExists is an answer)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from broker import metrics


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    before = metrics.counting()
    metrics.count(True)
    engine = sa.create_engine("sqlite://")
    metrics.watch_engine(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("create table names (name text primary key)"))
    try:
        yield engine
    finally:
        engine.dispose()
        metrics.count(before)


def _errors(verb: str) -> float:
    return metrics.STORE_ERRORS.labels("entity", verb)._value.get()


def test_a_taken_unique_key_is_not_a_store_error(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("insert into names values ('alice')"))
    start = _errors("insert")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("insert into names values ('alice')"))
    assert _errors("insert") == start


def test_a_statement_the_store_refuses_is_counted(engine: sa.Engine) -> None:
    """The control, through the same watch: a failure that is the store's is counted."""
    start = _errors("insert")
    with pytest.raises(OperationalError), engine.begin() as conn:
        conn.execute(sa.text("insert into missing values ('alice')"))
    assert _errors("insert") == start + 1
