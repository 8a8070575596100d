"""Wildcard matching (policy/matching.py): the text comparisons that spare plain patterns the
compiled regular expression decide exactly as it does, case folding included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.policy import matching

# Wildcards, the stand-ins for literal ones, ASCII in both cases, and characters whose case
# folding is not ASCII's (the Kelvin sign folds to "k", the long s to "s").
ALPHABET = "*?\ue000\ue001aAkKsS:/-.\u212a\u017f\u0130i\u00df\n"
TEXT = st.text(alphabet=ALPHABET, max_size=8)


# Spellings of one letter that a case-insensitive match may treat alike.
FOLDS = {"k": "kK\u212a", "s": "sS\u017f", "i": "iI\u0130", "a": "aA"}


@st.composite
def pattern_and_a_spelling(draw: st.DrawFn) -> tuple[str, str]:
    """A plain pattern and the same letters spelled otherwise: where folding decides."""
    letters = draw(st.text(alphabet="ksia:", min_size=1, max_size=6))
    spelled = "".join(draw(st.sampled_from(FOLDS[c])) if c in FOLDS else c for c in letters)
    return letters, spelled


def reference(pattern: str, text: str, ignore_case: bool) -> bool:
    return matching.glob(pattern, ignore_case=ignore_case).fullmatch(text) is not None


@settings(max_examples=3000)
@given(TEXT, TEXT, st.booleans())
def test_matches_is_the_regular_expression(pattern: str, text: str, ignore_case: bool) -> None:
    assert matching.matches(pattern, text, ignore_case=ignore_case) == \
        reference(pattern, text, ignore_case)


@settings(max_examples=1000)
@given(pattern_and_a_spelling(), st.booleans(), st.booleans())
def test_case_folding_is_the_regular_expressions(pair: tuple[str, str], ignore_case: bool,
                                                  swap: bool) -> None:
    pattern, text = reversed(pair) if swap else pair
    assert matching.matches(pattern, text, ignore_case=ignore_case) == \
        reference(pattern, text, ignore_case)


def test_plain_patterns_and_the_controls() -> None:
    assert matching.matches("sts:AssumeRole", "STS:assumerole", ignore_case=True)
    assert not matching.matches("sts:AssumeRole", "STS:assumerole")
    assert not matching.matches("sts:AssumeRole", "sts:AssumeRoleWithSAML", ignore_case=True)
    assert matching.matches("\u212a", "k", ignore_case=True)  # the Kelvin sign folds to k
    assert matching.matches("\u017f", "S", ignore_case=True)  # the long s to s
    assert not matching.matches("k", "\u212a")
    assert matching.matches("*", "anything\nat all")
    assert matching.matches("a\ue000", "a*") and not matching.matches("a\ue000", "ab")
