from __future__ import annotations

import re

from broker.aws import ids


def test_access_key_ids_have_aws_shape_and_carry_their_account() -> None:
    for temporary, prefix in ((False, "AKIA"), (True, "ASIA")):
        key = ids.new_access_key_id("012345678901", temporary=temporary)
        assert re.fullmatch(prefix + r"[A-Z2-7]{16}", key)
        assert ids.account_of_access_key_id(key) == "012345678901"
        assert ids.is_temporary_key_id(key) is temporary


def test_foreign_key_ids_have_no_account() -> None:
    assert ids.account_of_access_key_id("AKIDEXAMPLE") is None
    assert ids.account_of_access_key_id("AKIA" + "7" * 16) is None  # decodes past 10**12


def test_secrets_and_unique_ids() -> None:
    secret = ids.new_secret_access_key()
    assert len(secret) == 40 and re.fullmatch(r"[A-Za-z0-9+/]{40}", secret)
    assert re.fullmatch(r"AIDA[A-Z2-7]{17}", ids.new_unique_id(ids.USER_ID_PREFIX))
    assert re.fullmatch(r"\d{12}", ids.new_account_id())
    assert len({ids.new_secret_access_key() for _ in range(100)}) == 100
