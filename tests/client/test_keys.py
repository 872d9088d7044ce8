"""Keys of submit and map, on plain data."""

from __future__ import annotations

import re

from dask.utils import key_split

from shoal.client.keys import map_keys, submit_key


def inc(x: int) -> int:
    return x + 1


def test_impure_map_keys_are_unique_within_and_across_calls() -> None:
    rows = [(i,) for i in range(1000)]
    first = map_keys(inc, rows, {}, None, pure=False)
    second = map_keys(inc, rows, {}, None, pure=False)
    assert len(set(first) | set(second)) == 2000
    assert all(re.fullmatch(r"inc-[0-9a-f]{32}", k) for k in first + second)
    assert {key_split(k) for k in first} == {"inc"}


def test_pure_keys_repeat_and_a_given_prefix_is_used() -> None:
    rows = [(1,), (2,)]
    assert map_keys(inc, rows, {}, None, pure=True) == map_keys(inc, rows, {}, None, pure=True)
    assert all(k.startswith("step-") for k in map_keys(inc, rows, {}, "step", pure=False))
    assert submit_key(inc, (1,), {}, None, True) == submit_key(inc, (1,), {}, None, True)
    assert submit_key(inc, (1,), {}, None, False) != submit_key(inc, (1,), {}, None, False)
