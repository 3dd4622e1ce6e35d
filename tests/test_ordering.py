"""Order keys: text order is number order, the key between two neighbours is short and strictly between."""

from __future__ import annotations

import random

import pytest

from app.models import FIRST_POSITION, POSITION_MAX_LENGTH
from app.tasks.ordering import GAP, INTEGER_DIGITS, MAX_KEY_LENGTH, key_between, key_of


def test_keys_past_the_bound_still_fit_the_column() -> None:
    assert MAX_KEY_LENGTH + INTEGER_DIGITS < POSITION_MAX_LENGTH


def test_the_first_key_of_an_empty_list_is_the_starting_position() -> None:
    assert key_between(None, None) == key_of(FIRST_POSITION)


def test_keys_at_the_ends_are_a_gap_away() -> None:
    first = key_of(FIRST_POSITION)

    assert key_between(None, first) == key_of(FIRST_POSITION - GAP)
    assert key_between(first, None) == key_of(FIRST_POSITION + GAP)


def test_between_integer_neighbours_a_key_takes_the_middle_integer() -> None:
    assert key_between(key_of(1000), key_of(2024)) == key_of(1512)


def test_between_adjacent_integers_a_key_takes_one_fraction_digit() -> None:
    key = key_between(key_of(7), key_of(8))

    assert key == f"{7:0{INTEGER_DIGITS}d}5"
    assert key_of(7) < key < key_of(8)


def test_a_key_between_two_equal_or_reversed_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="not before"):
        key_between(key_of(8), key_of(7))


def test_repeated_insertion_into_one_gap_stays_ordered_and_grows_slowly() -> None:
    rng = random.Random(5)  # noqa: S311 - a seeded sequence, not a secret
    keys = [key_of(10), key_of(11)]
    for _ in range(200):
        index = rng.randrange(len(keys) - 1)
        keys.insert(index + 1, key_between(keys[index], keys[index + 1]))
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)

    assert max(len(key) for key in keys) < INTEGER_DIGITS + 40


def test_keys_deep_in_a_gap_keep_every_digit() -> None:
    low, high = key_of(FIRST_POSITION), key_of(FIRST_POSITION + 1)
    for _ in range(60):
        high = key_between(low, high)

    assert low < high
    assert len(high) > 28  # past the default decimal precision, where rounding would have made them meet
