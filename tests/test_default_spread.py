"""benchmarks/default_spread.py: a group of the default run's replicates, one prefix or several."""

from __future__ import annotations

from benchmarks.default_spread import groups_of, label
from fewsam.exp_records import ExpRecord


def record(name: str) -> ExpRecord:
    return ExpRecord(name=name, rev="0" * 40, baseline="1" * 40, state="success", timestamp="")


def test_a_group_joins_the_prefixes_it_names_and_nothing_else() -> None:
    names = ["a-s1", "a-s0", "a-more-s3", "a-more-s4", "ab-s2", "a-s0x", "b-s0"]
    groups = groups_of([record(n) for n in names], ["a", "a+a-more", "b"])
    assert [r.name for r in groups["a"]] == ["a-s0", "a-s1"]
    assert [r.name for r in groups["a+a-more"]] == ["a-s0", "a-s1", "a-more-s3", "a-more-s4"]
    assert [r.name for r in groups["b"]] == ["b-s0"]
    assert label("a+a-more") == "`a-s*` + `a-more-s*`"
