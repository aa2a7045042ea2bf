"""The grid of ranks and the split of probes and examples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spsa_mix.distributed import Layout, split_bounds


@given(n=st.integers(0, 200), parts=st.integers(1, 17))
def test_split_bounds_covers_everything_in_chunks_that_differ_by_at_most_one_larger_first(n, parts):
    bounds = split_bounds(n, parts)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == n and len(sizes) == parts
    assert sizes.max() - sizes.min() <= 1 and np.all(np.diff(sizes) <= 0)
    assert sizes.tolist() == [len(c) for c in np.array_split(np.arange(n), parts)]


def test_split_bounds_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"parts must be an integer >= 1, but got 0"):
        split_bounds(3, 0)
    with pytest.raises(ValueError, match=r"n must be an integer >= 0, but got -1"):
        split_bounds(-1, 2)


@pytest.mark.parametrize("world,groups", [(1, 1), (6, 1), (6, 2), (6, 3), (6, 6), (8, 4)])
def test_every_rank_has_one_place_on_the_grid(world, groups):
    layouts = [Layout(world_size=world, rank=r, probe_groups=groups) for r in range(world)]
    places = {(lay.probe_group, lay.data_rank) for lay in layouts}
    assert len(places) == world
    assert all(lay.data_size * groups == world for lay in layouts)
    # the ranks of a group are contiguous; data rank d is the same shard in every group
    assert [lay.probe_group for lay in layouts] == sorted(lay.probe_group for lay in layouts)


@given(n=st.integers(1, 40), groups=st.sampled_from([1, 2, 3, 4, 6, 12]))
def test_the_probe_chunks_of_the_groups_partition_the_probes(n, groups):
    world = 12
    chunks = {Layout(world_size=world, rank=r, probe_groups=groups).probe_chunk(n) for r in range(world)}
    covered = sorted(i for lo, hi in chunks for i in range(lo, hi))
    assert covered == list(range(n))
    owner = Layout(world_size=world, rank=0, probe_groups=groups).group_of_probes(n)
    for r in range(world):
        lay = Layout(world_size=world, rank=r, probe_groups=groups)
        lo, hi = lay.probe_chunk(n)
        assert np.all(owner[lo:hi] == lay.probe_group)


def test_a_bad_layout_says_what_was_wrong():
    with pytest.raises(ValueError, match=r"probe_groups must divide the world size 6, but got 4"):
        Layout(world_size=6, rank=0, probe_groups=4)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\] \(world_size=2\), but got 2"):
        Layout(world_size=2, rank=2)
    with pytest.raises(ValueError, match=r"world_size must be an integer >= 1, but got 0"):
        Layout(world_size=0, rank=0)
