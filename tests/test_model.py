import math

import numpy as np
import pytest
import torch

from dualenc.config import ModelConfig
from dualenc.model import DualEncoder, inbatch_loss, pair_loss
from dualenc.peephole import PeepholeLSTM


def tiny(cell: str = "lstm", **kw) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(ModelConfig(vocab_size=20, embed_dim=4, hidden_dim=3, cell=cell, **kw))


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_shapes(cell, bidirectional):
    model = tiny(cell, bidirectional=bidirectional)
    ids = torch.randint(2, 20, (5, 7))
    lens = torch.tensor([7, 1, 3, 5, 2])
    d = 6 if bidirectional else 3
    assert model.encode(ids, lens).shape == (5, d)
    c, r = model.encode_pairs(ids, lens, ids[:4, :3], torch.tensor([3, 2, 1, 3]))
    assert c.shape == (5, d) and r.shape == (4, d)
    assert model.all_logits(c, r).shape == (5, 4)
    assert model(ids, lens, ids, lens).shape == (5,)
    assert model.candidate_logits(c, r[None].expand(5, 4, d)).shape == (5, 4)


def test_hand_computed_bilinear_logit():
    model = DualEncoder(ModelConfig(vocab_size=4, embed_dim=2, hidden_dim=2))
    with torch.no_grad():
        model.M.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        model.b.fill_(0.5)
    c = torch.tensor([[1.0, 1.0]])
    r = torch.tensor([[2.0, 3.0]])
    # c·M = [1*1 + 1*0, 1*2 + 1*1] = [1, 3]; (c·M)·r = 1*2 + 3*3 = 11; + b = 11.5
    assert model.pair_logits(c, r).tolist() == [11.5]
    assert model.all_logits(c, torch.cat([r, -r])).tolist() == [[11.5, -10.5]]
    prob = torch.sigmoid(model.pair_logits(c, r)).item()
    assert prob == pytest.approx(1 / (1 + math.exp(-11.5)))


def test_logit_of_the_whole_model_is_c_m_r_plus_b():
    model = tiny()
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    lens = torch.tensor([3, 2])
    c, r = model.encode(ids, lens), model.encode(ids.flip(0), lens.flip(0))
    expected = torch.stack([c[i] @ model.M @ r[i] + model.b for i in range(2)])
    assert torch.allclose(model(ids, lens, ids.flip(0), lens.flip(0)), expected, atol=1e-6)


def test_reference_initialisation():
    model = DualEncoder(ModelConfig(vocab_size=50))
    assert model.embedding.weight.abs().max() <= 0.25
    assert model.M.shape == (200, 200) and model.M.abs().max() <= 2.0
    assert model.b.item() == 0.0
    bias = model.encoder.forward_rnn.bias_ih_l0
    assert bias[200:400].eq(2.0).all() and bias[:200].eq(0.0).all()
    identity = DualEncoder(ModelConfig(vocab_size=50, m_init="identity"))
    assert torch.equal(identity.M, torch.eye(200))


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_padding_does_not_change_an_encoding(cell):
    model = tiny(cell, bidirectional=True).eval()
    seq = torch.tensor([[5, 6, 7]])
    alone = model.encode(seq, torch.tensor([3]))
    padded = model.encode(torch.tensor([[5, 6, 7, 0, 0, 0]]), torch.tensor([3]))
    assert torch.allclose(alone, padded, atol=1e-6)


def test_length_groups_give_the_same_encodings():
    model = tiny().eval()
    ids = torch.randint(2, 20, (9, 8))
    lens = torch.tensor([8, 1, 4, 6, 2, 8, 3, 5, 7])
    whole = model.encode(ids, lens)
    model.group_size = 2
    assert torch.allclose(model.encode(ids, lens), whole, atol=1e-6)


def reference_peephole(cell: PeepholeLSTM, x: torch.Tensor) -> torch.Tensor:
    """One sequence (T, E), one step at a time, straight from the equations."""
    h_dim = cell.hidden_dim
    w_i, w_f, w_g, w_o = cell.weight_ih.split(h_dim)
    u_i, u_f, u_g, u_o = cell.weight_hh.split(h_dim)
    b_i, b_f, b_g, b_o = cell.bias.split(h_dim)
    p_i, p_f, p_o = cell.peephole
    h = torch.zeros(h_dim, dtype=x.dtype)
    c = torch.zeros(h_dim, dtype=x.dtype)
    for x_t in x:
        i = torch.sigmoid(w_i @ x_t + u_i @ h + p_i * c + b_i)
        f = torch.sigmoid(w_f @ x_t + u_f @ h + p_f * c + b_f)
        g = torch.tanh(w_g @ x_t + u_g @ h + b_g)
        c = f * c + i * g
        o = torch.sigmoid(w_o @ x_t + u_o @ h + p_o * c + b_o)
        h = o * torch.tanh(c)
    return h


def test_peephole_cell_matches_a_step_by_step_reference():
    torch.manual_seed(1)
    cell = PeepholeLSTM(input_dim=4, hidden_dim=3, forget_bias=2.0)
    with torch.no_grad():
        cell.bias.normal_()  # make every term count
    x = torch.randn(4, 6, 4)
    lens = torch.tensor([6, 2, 4, 1])
    got = cell(x, lens)
    for row in range(4):
        want = reference_peephole(cell, x[row, : lens[row]])
        assert torch.allclose(got[row], want, atol=1e-6)


def test_peephole_forget_bias():
    cell = PeepholeLSTM(4, 3, forget_bias=2.0)
    assert cell.bias.tolist() == [0.0] * 3 + [2.0] * 3 + [0.0] * 6


def test_losses():
    logits = torch.tensor([0.0, 0.0])
    assert pair_loss(logits, torch.tensor([1, 0])).item() == pytest.approx(math.log(2))
    # Two contexts, equal scores everywhere: each picks its response with p = 1/2.
    assert inbatch_loss(torch.zeros(2, 2)).item() == pytest.approx(math.log(2))
    # Offset: this process holds rows 2..3 of a global batch of 4; targets are columns 2, 3.
    all_logits = torch.tensor([[0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 9.0]])
    assert inbatch_loss(all_logits, offset=2).item() < 0.01


def test_peephole_gradients_match_autograd_through_the_reference():
    torch.manual_seed(2)
    cell = PeepholeLSTM(input_dim=3, hidden_dim=2).double()
    with torch.no_grad():
        cell.bias.normal_()
        cell.peephole.normal_()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([2, 5, 3])
    weights = torch.randn(3, 2, dtype=torch.float64)
    (cell(x, lens) * weights).sum().backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in cell.parameters()]
    x.grad = None
    cell.zero_grad()
    slow = torch.stack([reference_peephole(cell, x[r, : lens[r]]) for r in range(3)])
    (slow * weights).sum().backward()
    reference = [x.grad] + [p.grad for p in cell.parameters()]
    for got, want in zip(fast, reference, strict=True):
        assert torch.allclose(got, want, atol=1e-10)


def test_a_copy_of_the_true_response_is_no_negative():
    # Rows 0 and 1 hold the same response (key 5): unmasked each context splits its
    # probability over two equal columns (loss ln 2); masked, only its own column is left.
    logits = torch.zeros(3, 3)
    keys = torch.tensor([5, 5, 7])
    assert inbatch_loss(logits).item() == pytest.approx(math.log(3))
    # row 0: columns 0 and 2 remain -> ln 2; row 1: columns 1 and 2 -> ln 2; row 2: all -> ln 3
    expected = (2 * math.log(2) + math.log(3)) / 3
    assert inbatch_loss(logits, 0, keys, keys).item() == pytest.approx(expected)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooled_encodings_ignore_padding(pooling):
    model = tiny(pooling=pooling, bidirectional=True).eval()
    alone = model.encode(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
    padded = model.encode(torch.tensor([[5, 6, 7, 0, 0]]), torch.tensor([3]))
    assert alone.shape == (1, 6)
    assert torch.allclose(alone, padded, atol=1e-6)


def test_a_context_window_keeps_the_last_tokens():
    from dualenc.features import Ragged

    ragged = Ragged(np.arange(1, 8, dtype=np.int32), np.array([0, 5, 7]), np.array([5, 2]))
    ids, lens = ragged.batch(np.array([0, 1]), keep_last=3)
    assert ids.tolist() == [[3, 4, 5], [6, 7, 0]] and lens.tolist() == [3, 2]


def test_the_symmetric_loss_averages_both_directions():
    from dualenc.distributed import DistContext
    from dualenc.train import Objective

    torch.manual_seed(0)
    model = tiny()
    with torch.no_grad():  # large weights, so that the two directions differ clearly
        for p in model.parameters():
            p.mul_(20)
    ids = torch.tensor([[5, 6, 7], [8, 9, 0], [10, 11, 12]])
    lens = torch.tensor([3, 2, 3])
    r_ids, r_lens = ids.flip(0), lens.flip(0)
    keys = torch.tensor([1, 2, 3])
    inputs = (ids, lens, r_ids, r_lens, torch.ones(3), keys, 3)
    c, r = model.encode_pairs(ids, lens, r_ids, r_lens)
    forward = model.all_logits(c, r)  # (3, 3): context i against response j
    backward = model.all_logits(c, r).t()  # response i against context j
    one_way = Objective(model, "inbatch", DistContext())(*inputs)
    both = Objective(model, "symmetric", DistContext())(*inputs)
    assert one_way.item() == pytest.approx(inbatch_loss(forward).item(), abs=1e-6)
    expected = (inbatch_loss(forward) + inbatch_loss(backward)).item() / 2
    assert both.item() == pytest.approx(expected, abs=1e-6)
    assert both.item() != pytest.approx(one_way.item(), abs=1e-4)


@pytest.mark.parametrize(("cell", "bidirectional"), [("lstm", False), ("gru", True),
                                                     ("peephole", False)])
def test_lanes_give_the_encodings_and_gradients_of_one_lane(cell, bidirectional):
    model = tiny(cell, bidirectional=bidirectional, pooling="max" if bidirectional else "last")
    model.group_size = 3  # 10 sequences: 4 groups a side (the peephole cell: one a lane)
    generator = torch.Generator().manual_seed(1)
    ids, r_ids = (torch.randint(1, 20, (10, t), generator=generator) for t in (12, 5))
    lens, r_lens = (torch.randint(1, t + 1, (10,), generator=generator) for t in (12, 5))
    results = []
    for lanes in (1, 2, 3):
        model.lanes = lanes
        model.zero_grad()
        logits = model(ids, lens, r_ids, r_lens)
        pair_loss(logits, torch.ones(10)).backward()
        with torch.no_grad():
            encs = model.encode(ids, lens)
        results.append((logits.detach(), encs, [p.grad.clone() for p in model.parameters()]))
    for logits, encs, grads in results[1:]:
        assert torch.allclose(logits, results[0][0], atol=1e-6)
        assert torch.allclose(encs, results[0][1], atol=1e-6)
        pairs = zip(grads, results[0][2], strict=True)
        assert all(torch.allclose(g, g1, atol=1e-6) for g, g1 in pairs)


def test_lanes_take_the_costliest_group_first():
    from dualenc.lanes import assign_lanes, default_lanes

    assert (default_lanes("lstm", 2), default_lanes("gru", 4), default_lanes("peephole", 2)) == (
        2, 4, 1)

    # costs 5, 9, 2, 7, 3 on 2 lanes, costliest first: 9 (#1) -> lane 0; 7 (#3) -> lane 1;
    # 5 (#0) -> lane 1 (7 < 9); 3 (#4) -> lane 0 (9 < 12); 2 (#2) -> lane 0 (12 = 12, the
    # lower lane). Lane 0 holds #1, #4, #2 (cost 14), lane 1 #3, #0 (12), each in order.
    assert assign_lanes([5, 9, 2, 7, 3], 2) == [[1, 2, 4], [0, 3]]
    assert assign_lanes([4], 3) == [[0]]  # an idle lane gets no list


def test_two_lanes_repeat_to_the_last_digit_under_bf16():
    # Autocast keeps its casts of the weights in one cache for all threads: a lane that took
    # the other lane's cast would sum its groups' weight gradients in bf16, by timing.
    model = tiny("lstm")
    model.lanes, model.group_size = 2, 16  # 64 sequences a side: 4 groups each
    generator = torch.Generator().manual_seed(2)
    ids, r_ids = (torch.randint(1, 20, (64, t), generator=generator) for t in (40, 9))
    lens, r_lens = (torch.randint(1, t + 1, (64,), generator=generator) for t in (40, 9))
    runs = []
    for _ in range(6):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, lens, r_ids, r_lens)
        pair_loss(logits.float(), torch.ones(64)).backward()
        runs.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(g, g0) for grads in runs[1:] for g, g0 in zip(grads, runs[0],
                                                                          strict=True))


def test_the_peephole_encoder_embeds_packed_ids_as_the_padded_path_does():
    # packing the ids first embeds no padding; both directions see what the padded path sees
    model = tiny("peephole", bidirectional=True)
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 20, (6, 9), generator=generator)
    lens = torch.tensor([9, 1, 4, 9, 6, 2])
    padded = model.encoder(model.embedding(ids), lens)
    assert torch.allclose(model.encode(ids, lens), padded, atol=1e-6)
    # step 0 of the reversed packing holds each sequence's last token, longest first
    from dualenc.model import reversed_rows
    from dualenc.peephole import pack_ids

    packed = pack_ids(ids, lens)
    reversed_data = packed.data[reversed_rows(ids, lens)]
    order = packed.sorted_indices
    assert torch.equal(reversed_data[:6], ids[order, lens[order] - 1])


def test_the_peephole_backward_refuses_to_run_twice():
    # it rewrites the saved gates into its factors in place, so a second pass would be wrong
    cell = PeepholeLSTM(input_dim=3, hidden_dim=2)
    out = cell(torch.randn(2, 4, 3), torch.tensor([4, 2]))
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        out.sum().backward()


def test_length_groups_follow_the_precision_unless_set():
    lstm, peephole = tiny("lstm"), tiny("peephole")
    cpu = torch.device("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (lstm._group_size(cpu), peephole._group_size(cpu)) == (64, 10**9)
    assert lstm._group_size(cpu) == 48
    lstm.group_size = 5
    assert lstm._group_size(cpu) == 5
