"""PackedPolicySize's deflated length: the quick way for small input is the same length as
zlib.compress(data, 9), the way the figure is defined."""

from __future__ import annotations

import json
import random
import string
import zlib

import pytest

from broker.sts.sessions import SMALL_WINDOW_INPUT, deflated_size, packed_size


def _inputs() -> list[bytes]:
    rng = random.Random(20261129)
    alphabets = [string.ascii_letters, "ab", string.digits + "-", "abcd,:/\"[]"]
    found: list[bytes] = [b"", b"x", b'[null,[],[["team","platform"]]]']
    for _ in range(3000):
        alphabet = rng.choice(alphabets)
        size = rng.randint(1, SMALL_WINDOW_INPUT + 400)
        if rng.random() < 0.3:  # repetitive, as policies and tag lists are
            unit = "".join(rng.choice(alphabet) for _ in range(rng.randint(5, 400)))
            text = (unit * (size // len(unit) + 1))[:size]
        else:
            text = "".join(rng.choice(alphabet) for _ in range(size))
        found.append(text.encode())
    # Right at the edge, both sides of it.
    for size in range(SMALL_WINDOW_INPUT - 3, SMALL_WINDOW_INPUT + 4):
        found.append(("abcdefghij" * 400)[:size].encode())
        found.append(bytes(rng.getrandbits(8) for _ in range(size)))
    return found


def _colliding() -> bytes:
    """Input whose best matches lie deep in hash chains that a smaller hash table (memLevel 7)
    fills with collisions ("aqq" and "qqq" share a 14-bit hash), so that level 9, cutting its
    search short, deflates it differently (found by review)."""
    rng = random.Random(1)
    tail = bytes(rng.choice(b"BCDEFGHJKLMNOPRSTUVWXYZ0123456789") for _ in range(120))
    return (b"." + b"aqq" + tail + b"/" + b"q" * 1030 + b"%" + b"waqq" + tail[:33] + b"#"
            + b"waqq" + tail + b"!")


def test_deflated_size_is_zlib_level_9_length() -> None:
    inputs = [*_inputs(), _colliding()]
    assert sum(len(data) <= SMALL_WINDOW_INPUT for data in inputs) > 2000
    for data in inputs:
        assert deflated_size(data) == len(zlib.compress(data, 9)), len(data)


@pytest.mark.parametrize("tags", [[("team", "platform")],
                                  [(f"key{i}", "v" * 200) for i in range(20)]])
def test_packed_size_is_the_percentage_of_2048_bytes(tags: list[tuple[str, str]]) -> None:
    packed = json.dumps([None, [], [list(t) for t in tags]], separators=(",", ":")).encode()
    expected = -(-100 * len(zlib.compress(packed, 9)) // 2048)
    assert packed_size(None, [], tags) == expected
