"""Sampler invariants: P distinct ids x K, up-sampling, whole batches, disjoint rank shares."""

from collections import Counter

import pytest

from clipreid_plugin.data.samplers import PKSampler, RandomSampler, SamplerError

# 12 identities: id 0 has 1 image, id 1 has 2, id 2 has 9, the others 4..7.
PIDS = [0] + [1] * 2 + [2] * 9 + [p for p in range(3, 12) for _ in range(4 + p % 4)]


def _batches(indices, size):
    assert len(indices) % size == 0
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def test_pk_batches_have_p_distinct_ids_times_k():
    s = PKSampler(pids=PIDS, batch_size=16, num_instance=4, seed=3)
    for epoch in range(5):
        idx = s.epoch_indices(epoch)
        assert len(idx) > 0
        for batch in _batches(idx, 16):
            counts = Counter(PIDS[i] for i in batch)
            assert len(counts) == 4 and set(counts.values()) == {4}
            for k in range(0, 16, 4):  # each chunk of K is one identity
                assert len({PIDS[i] for i in batch[k:k + 4]}) == 1


def test_pk_upsamples_small_identities_with_replacement():
    s = PKSampler(pids=PIDS, batch_size=8, num_instance=4, seed=0)
    seen = Counter()
    for epoch in range(10):
        idx = s.epoch_indices(epoch)
        seen.update(i for i in idx if PIDS[i] == 0)
        ones = [i for i in idx if PIDS[i] == 1]
        assert len(ones) in (0, 4) and set(ones) <= {1, 2}
    assert seen[0] > 0 and seen[0] % 4 == 0  # the single image comes K times per use


def test_pk_uses_at_most_whole_chunks_per_identity():
    s = PKSampler(pids=PIDS, batch_size=8, num_instance=4, seed=1)
    idx = s.epoch_indices(0)
    per_id = Counter(PIDS[i] for i in idx)
    assert per_id[2] <= 8  # 9 images -> 2 chunks of 4, the 9th dropped
    assert len(set(i for i in idx if PIDS[i] == 2)) == per_id[2]  # no repeats for big ids


def test_pk_is_deterministic_per_seed_and_epoch():
    a = PKSampler(pids=PIDS, batch_size=16, num_instance=4, seed=7)
    b = PKSampler(pids=PIDS, batch_size=16, num_instance=4, seed=7)
    assert a.epoch_indices(4) == b.epoch_indices(4)
    assert a.epoch_indices(4) != a.epoch_indices(5)
    assert a.epoch_indices(4) != PKSampler(pids=PIDS, batch_size=16, num_instance=4, seed=8).epoch_indices(4)
    b.set_epoch(4)
    assert list(b) == a.epoch_indices(4) and len(b) == len(a.epoch_indices(4))


@pytest.mark.parametrize("cls", [PKSampler, RandomSampler])
def test_two_ranks_get_disjoint_equal_shares_of_the_epoch(cls):
    full = cls(pids=PIDS, batch_size=16, num_instance=4, seed=5).global_epoch_indices(2)
    r0 = cls(pids=PIDS, batch_size=16, num_instance=4, seed=5, rank=0, world_size=2).epoch_indices(2)
    r1 = cls(pids=PIDS, batch_size=16, num_instance=4, seed=5, rank=1, world_size=2).epoch_indices(2)
    assert len(r0) == len(r1) == len(full) // 2 and len(r0) % 8 == 0
    for g, batch in enumerate(_batches(full, 16)):  # rank r: its half of every global batch
        assert r0[g * 8:(g + 1) * 8] == batch[:8] and r1[g * 8:(g + 1) * 8] == batch[8:]
    if cls is PKSampler:
        for share in (r0, r1):  # per-rank batches are still P x K
            for batch in _batches(share, 8):
                assert sorted(Counter(PIDS[i] for i in batch).values()) == [4, 4]


def test_random_sampler_covers_everything_in_full_batches():
    s = RandomSampler(pids=PIDS, batch_size=16, num_instance=4, seed=0)
    idx = s.epoch_indices(0)
    assert len(idx) % 16 == 0 and len(idx) < len(PIDS) + 16
    assert set(idx) == set(range(len(PIDS)))
    assert idx[:len(PIDS)] != list(range(len(PIDS)))


def test_too_few_identities_for_a_batch_is_a_clear_error():
    with pytest.raises(SamplerError, match=r"SOLVER.IMS_PER_BATCH=64.*NUM_INSTANCE=4.*16 identities.*only 12"):
        PKSampler(pids=PIDS, batch_size=64, num_instance=4, seed=0)


def test_batch_not_divisible_errors_name_keys_and_values():
    with pytest.raises(SamplerError, match=r"IMS_PER_BATCH=30.*processes \(4\)"):
        PKSampler(pids=PIDS, batch_size=30, num_instance=5, seed=0, world_size=4)
    with pytest.raises(SamplerError, match=r"= 16 / 2 = 8.*NUM_INSTANCE=3"):
        PKSampler(pids=PIDS, batch_size=16, num_instance=3, seed=0, rank=0, world_size=2)
