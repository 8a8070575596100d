"""Failing closed: when the database goes away, what needs it is refused with
ServiceUnavailable, and what does not (temporary credentials) keeps working."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import botocore.exceptions
import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import DATABASE_URL, creds_of, start_broker


def test_database_outage(tmp_path: Path, postgres_databases: Callable[[], str]) -> None:
    url = postgres_databases()
    broker = start_broker(tmp_path / "d", env={"BROKER_STORE_DATABASE_URL": url})
    try:
        session = creds_of(broker.client("sts").get_session_token())
        broker.client("iam").create_user(UserName="before-outage")  # the control
        broker.client("organizations").create_organization()  # and for the JSON protocol
        assert httpx.get(broker.url + "/readyz").status_code == 200

        admin = sa.create_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://"),
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()

        with pytest.raises(botocore.exceptions.ClientError) as info:
            broker.client("iam").list_users()
        error = info.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            "ServiceUnavailable", 503)
        # The JSON protocol fails closed in its own format.
        with pytest.raises(botocore.exceptions.ClientError) as info:
            broker.client("organizations", session).describe_organization()
        error = info.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            "ServiceUnavailableException", 503)
        with pytest.raises(botocore.exceptions.ClientError) as info:
            broker.client("sts").get_caller_identity()  # a long-term key needs the store
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        # A temporary credential carries its session: it needs no store at all.
        who = broker.client("sts", session).get_caller_identity()
        assert who["Arn"].endswith(":root")
        ready = httpx.get(broker.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["failed"] == {"entity_store": "StoreUnavailable"}
    finally:
        broker.stop()
