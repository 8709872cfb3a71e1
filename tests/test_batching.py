import torch

from dualenc.batching import PairBatch


def test_hash_words_replaces_whole_word_types_by_their_buckets():
    # Ids 2..7 are words, 8 and 9 buckets; buckets[i] is the bucket of id i's token.
    buckets = torch.tensor([0, 9, 8, 9, 8, 9, 8, 9, 8, 9])
    eligible = torch.tensor([False, False, False, False, True, True, True, True, False, False])
    ids = torch.tensor([[4, 5, 2, 0], [6, 7, 4, 3]])
    batch = PairBatch(ids, torch.tensor([3, 4]), ids.flip(1), torch.tensor([3, 4]),
                      torch.ones(2), torch.tensor([1, 2]))
    assert torch.equal(batch.hash_words(buckets, eligible, 0.0).context_ids, ids)
    every = batch.hash_words(buckets, eligible, 1.0)
    assert every.context_ids.tolist() == [[8, 9, 2, 0], [8, 9, 8, 3]]
    assert every.response_ids.tolist() == [[0, 2, 9, 8], [3, 8, 9, 8]]
    torch.manual_seed(5)
    some = batch.hash_words(buckets, eligible, 0.5)
    # Each type is replaced at every place in the batch or at none.
    before = torch.cat([batch.context_ids, batch.response_ids]).flatten()
    after = torch.cat([some.context_ids, some.response_ids]).flatten()
    outcomes = {int(i): {int(x) for x in after[before == i]} for i in before.unique()}
    assert all(len(seen) == 1 for seen in outcomes.values())
    assert {i for i, seen in outcomes.items() if seen != {i}} <= {4, 5, 6, 7}
    assert torch.equal(some.response_keys, batch.response_keys)


def test_word_dropout_replaces_real_tokens_only():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    batch = PairBatch(ids, torch.tensor([3, 2]), ids.clone(), torch.tensor([3, 2]),
                      torch.ones(2), torch.tensor([1, 2]))
    assert torch.equal(batch.drop_words(0.0, unk_id=1).context_ids, ids)
    dropped = batch.drop_words(0.999, unk_id=1)
    assert dropped.context_ids.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert torch.equal(dropped.response_keys, batch.response_keys)
    torch.manual_seed(3)
    half = PairBatch(torch.full((100, 100), 9), torch.full((100,), 100), ids, ids[:, 0],
                     torch.ones(100), torch.zeros(100)).drop_words(0.5, unk_id=1)
    assert 4500 < int((half.context_ids == 1).sum()) < 5500  # 10,000 draws at p = 1/2
