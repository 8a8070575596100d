from __future__ import annotations

import base64
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


def test_key_pairs_are_a_key_id_and_a_secret_of_the_usual_shapes() -> None:
    pairs = [ids.new_key_pair("000000000042", temporary=True) for _ in range(200)]
    for key_id, secret in pairs:
        assert ids.is_access_key_id(key_id) and ids.is_temporary_key_id(key_id)
        assert ids.account_of_access_key_id(key_id) == "000000000042"
        assert len(secret) == 40 and len(base64.b64decode(secret, validate=True)) == 30
    # Drawn fresh each time: no key id or secret repeats.
    assert len({k for k, _ in pairs}) == len({s for _, s in pairs}) == 200
    long_term, _ = ids.new_key_pair("000000000042", temporary=False)
    assert long_term.startswith("AKIA")
