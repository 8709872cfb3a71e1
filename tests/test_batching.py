import torch

from dualenc.batching import PairBatch


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
