"""How work is split between torchrun ranks: every training index and validation grid
goes to exactly one rank, whatever the world size (properties over random sizes)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine.data import build_source
from mile_engine.data.file_source import EpochSampler
from mile_engine.data.tiles import GridSource
from tests.helpers.settings import tiny


@given(size=st.integers(1, 300), world=st.integers(1, 5), seed=st.integers(0, 2**16),
       epoch=st.integers(0, 50))
def test_each_epoch_deals_every_usable_index_to_exactly_one_rank(
    size: int, world: int, seed: int, epoch: int
) -> None:
    shards = []
    for rank in range(world):
        sampler = EpochSampler(size, seed, rank, world)
        sampler.epoch = epoch
        shard = list(sampler)
        assert shard == sampler.permutation(epoch).tolist()  # from the start
        assert len(shard) == len(sampler) == size // world  # equal shares: ranks keep step
        shards.append(shard)
    dealt = [i for shard in shards for i in shard]
    assert len(set(dealt)) == len(dealt)  # no index on two ranks
    assert set(dealt) <= set(range(size))
    assert len(dealt) == size - size % world  # only the remainder is left out
    # The deal is a function of (seed, epoch): a resumed rank draws the same shard.
    again = EpochSampler(size, seed, world - 1, world)
    assert again.permutation(epoch).tolist() == shards[-1]


@given(size=st.integers(2, 300), seed=st.integers(0, 2**16), start=st.integers(0, 300))
def test_a_sampler_resumed_mid_epoch_goes_on_where_it_stopped(
    size: int, seed: int, start: int
) -> None:
    sampler = EpochSampler(size, seed)
    sampler.epoch, sampler.start = 3, min(start, size)
    assert list(sampler) == sampler.permutation(3).tolist()[min(start, size):]
    assert len(sampler) == size - min(start, size)


def test_epochs_are_shuffled_differently() -> None:
    sampler = EpochSampler(100, seed=0)
    assert sampler.permutation(0).tolist() != sampler.permutation(1).tolist()
    assert sorted(sampler.permutation(1).tolist()) == list(range(100))


_SOURCE: list[GridSource] = []


def grid_source() -> GridSource:
    """One tiny digits source (64 validation grids), built once for the examples."""
    if not _SOURCE:
        source = build_source(tiny(), torch.device("cpu"))
        assert isinstance(source, GridSource)
        _SOURCE.append(source)
    return _SOURCE[0]


@settings(max_examples=30, deadline=None)
@given(world=st.integers(1, 4), batch_size=st.integers(1, 40))
def test_validation_grids_are_each_scored_on_exactly_one_rank(
    world: int, batch_size: int
) -> None:
    source = grid_source()
    whole = torch.cat([b.labels for b in source.val_batches(512)])
    images = torch.cat([b.images for b in source.val_batches(512)])
    # Batch i holds grids i*batch_size onwards and goes to rank i % world.
    seen = torch.zeros(len(whole), dtype=torch.int64)
    for rank in range(world):
        for i, batch in enumerate(source.val_batches(batch_size, rank, world)):
            first = (rank + i * world) * batch_size
            rows = slice(first, first + len(batch.labels))
            assert torch.equal(batch.labels, whole[rows])
            assert torch.equal(batch.images, images[rows])
            seen[rows] += 1
    assert bool((seen == 1).all()), seen
