"""Tests for the MLP (Bengio et al. 2003) and LSTM language models."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.data.batching import lm_stream
from llmcourse.models.lstm_lm import LSTMLM
from llmcourse.models.mlp_lm import MLPLM

V = 30


def ids(B=3, T=7, seed=0, vocab=V):
    return torch.randint(vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- MLP ------------------------------------------------------------------------------------------
def test_mlp_windows_match_a_python_loop():
    m = MLPLM(V, context=3, pad_id=2)
    idx = ids()
    w = m.windows(idx)
    assert w.shape == (3, 7, 3)
    for b in range(3):
        padded = [2, 2] + idx[b].tolist()
        for t in range(7):
            assert w[b, t].tolist() == padded[t : t + 3]  # ids t-2 .. t


@pytest.mark.parametrize("direct", [False, True])
def test_mlp_forward_matches_bengio_formula(direct):
    torch.manual_seed(0)
    m = MLPLM(V, context=2, emb_dim=5, hidden=11, direct=direct)
    if direct:
        torch.nn.init.normal_(m.direct.weight)  # zero at init; make it matter
    idx = ids(B=2, T=4)
    logits, loss = m(idx)
    assert logits.shape == (2, 4, V) and loss is None
    C, H, d, U, b = m.embedding.weight, m.hidden.weight, m.hidden.bias, m.head.weight, m.head.bias
    for bi in range(2):
        seq = [m.pad_id] + idx[bi].tolist()
        for t in range(4):
            x = torch.cat([C[seq[t]], C[seq[t + 1]]])  # y = b + Wx + U tanh(d + Hx)
            y = b + U @ torch.tanh(d + H @ x)
            if direct:
                y = y + m.direct.weight @ x
            torch.testing.assert_close(logits[bi, t], y, rtol=1e-5, atol=1e-5)


def test_mlp_sees_only_its_context():
    m = MLPLM(V, context=3)
    idx = ids(B=1, T=10)
    changed = idx.clone()
    changed[0, 4] = (changed[0, 4] + 1) % V
    a, _ = m(idx)
    b, _ = m(changed)
    same = torch.isclose(a, b).all(dim=-1)[0]
    assert same[:4].all() and not same[4:7].any() and same[7:].all()


# ---- LSTM -----------------------------------------------------------------------------------------
def lstm_reference(m: LSTMLM, idx: torch.Tensor) -> torch.Tensor:
    """The LSTM equations written out (one layer, gate order i, f, g, o), one sequence at a time."""
    W_ih, W_hh = m.lstm.weight_ih_l0, m.lstm.weight_hh_l0
    bias = m.lstm.bias_ih_l0 + m.lstm.bias_hh_l0
    n = m.lstm.hidden_size
    out = []
    for seq in idx:
        h = torch.zeros(n)
        c = torch.zeros(n)
        rows = []
        for token in seq.tolist():
            z = W_ih @ m.embedding.weight[token] + W_hh @ h + bias
            i, f, g, o = torch.sigmoid(z[:n]), torch.sigmoid(z[n:2 * n]), torch.tanh(z[2 * n:3 * n]), torch.sigmoid(z[3 * n:])
            c = f * c + i * g
            h = o * torch.tanh(c)
            rows.append(m.head.weight @ h + m.head.bias)
        out.append(torch.stack(rows))
    return torch.stack(out)


def test_lstm_matches_the_equations_batch_first():
    torch.manual_seed(0)
    m = LSTMLM(V, emb_dim=6, hidden_size=5).eval()
    idx = ids(B=3, T=5)
    logits, _ = m(idx)
    assert logits.shape == (3, 5, V)
    torch.testing.assert_close(logits, lstm_reference(m, idx), rtol=1e-5, atol=1e-5)


def test_lstm_is_causal_and_batch_independent():
    m = LSTMLM(V, emb_dim=8, hidden_size=8).eval()
    idx = ids(B=4, T=9)
    full, _ = m(idx)
    alone, _ = m(idx[1:2])  # batch and time not swapped: one row alone gives the same logits
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-6)
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % V
    after, _ = m(changed)
    torch.testing.assert_close(full[:, :5], after[:, :5])
    assert not torch.allclose(full[:, 5:], after[:, 5:])


def test_lstm_state_carries_across_chunks():
    m = LSTMLM(V, emb_dim=8, hidden_size=8, num_layers=2).eval()
    idx = ids(B=2, T=10)
    whole, _ = m(idx)
    state = m.new_cache()
    first, loss = m(idx[:, :6], cache=state)
    assert loss is None and state.h.shape == state.c.shape == (2, 2, 8)  # (num_layers, B, hidden)
    second, _ = m(idx[:, 6:7], cache=state)
    third, _ = m(idx[:, 7:], cache=state)
    torch.testing.assert_close(torch.cat([first, second, third], dim=1), whole, rtol=1e-5, atol=1e-6)


def test_lstm_state_reorder_follows_the_rows():
    m = LSTMLM(V, emb_dim=8, hidden_size=8, num_layers=2).eval()
    idx = ids(B=3, T=8)
    rows = torch.tensor([1, 1, 0, 2])
    state = m.new_cache()
    m(idx[:, :5], cache=state)
    state.reorder(rows)
    rest, _ = m(idx[rows, 5:], cache=state)
    torch.testing.assert_close(rest, m(idx[rows])[0][:, 5:], rtol=1e-5, atol=1e-6)


def test_lstm_state_errors():
    m = LSTMLM(V, emb_dim=8, hidden_size=8)
    state = m.new_cache()
    m(ids(B=2, T=3), cache=state)
    with pytest.raises(ValueError, match="the state holds 2 sequences but idx has 3 rows"):
        m(ids(B=3, T=1), cache=state)
    with pytest.raises(TypeError, match="LSTMState"):
        m(ids(B=1, T=1), cache=(torch.zeros(1, 1, 8), torch.zeros(1, 1, 8)))


def test_lstm_weight_tying():
    tied = LSTMLM(V, emb_dim=16, hidden_size=16, tie_weights=True)
    untied = LSTMLM(V, emb_dim=16, hidden_size=16)
    assert tied.head.weight is tied.embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == V * 16
    assert LSTMLM.block_size is None and tied.block_size is None
    with pytest.raises(ValueError, match="hidden_size == emb_dim"):
        LSTMLM(V, emb_dim=16, hidden_size=32, tie_weights=True)


def test_dropout_is_active_only_in_training():
    m = LSTMLM(V, emb_dim=8, hidden_size=8, num_layers=2, dropout=0.5)
    idx = ids()
    m.train()
    a, _ = m(idx)
    b, _ = m(idx)
    assert not torch.allclose(a, b)
    m.eval()
    c, _ = m(idx)
    d, _ = m(idx)
    assert torch.equal(c, d)


# ---- both -----------------------------------------------------------------------------------------
MODELS = [
    lambda: MLPLM(V, context=3),
    lambda: MLPLM(V, context=1, direct=True),
    lambda: LSTMLM(V, emb_dim=16, hidden_size=32),
    lambda: LSTMLM(V, emb_dim=16, hidden_size=16, num_layers=2, tie_weights=True),
]


@pytest.mark.parametrize("make", MODELS)
def test_loss_is_cross_entropy_and_starts_near_ln_v(make):
    torch.manual_seed(0)
    m = make().eval()
    idx, targets = ids(B=8, T=16, seed=1), ids(B=8, T=16, seed=2)
    logits, loss = m(idx, targets)
    reference = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    torch.testing.assert_close(loss, reference)
    assert abs(loss.item() - math.log(V)) < 0.05  # a uniform guess costs ln V nats
    masked = targets.clone()
    masked[:, :8] = -100  # ignored positions do not count
    _, loss_masked = m(idx, masked)
    torch.testing.assert_close(loss_masked, F.cross_entropy(logits[:, 8:].reshape(-1, V), targets[:, 8:].reshape(-1)))


@pytest.mark.parametrize("make", MODELS)
def test_bad_inputs(make):
    m = make()
    with pytest.raises(TypeError, match="integer"):
        m(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch, time"):
        m(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary has 30"):
        m(torch.tensor([[1, 30]]))
    with pytest.raises(ValueError, match="vocabulary"):
        m(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="same shape"):
        m(ids(B=2, T=3), ids(B=2, T=4))
    with pytest.raises(TypeError):
        m([[1, 2]])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="context"):
        MLPLM(V, context=0)
    with pytest.raises(ValueError, match="pad_id"):
        MLPLM(5, pad_id=5)
    with pytest.raises(ValueError, match="dropout"):
        LSTMLM(V, dropout=1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        LSTMLM(0)


@pytest.mark.parametrize("make", [
    lambda V: MLPLM(V, context=4, emb_dim=16, hidden=64),
    lambda V: LSTMLM(V, emb_dim=16, hidden_size=64),
])
def test_overfits_a_tiny_corpus(make):
    reviews = ["这本书很好看", "这本书很差劲", "物流很快"]
    chars = sorted(set("".join(reviews)))
    to_id = {c: i + 4 for i, c in enumerate(chars)}
    stream = lm_stream([[to_id[c] for c in r] for r in reviews], eos_id=3)
    vocab = len(chars) + 4
    x, y = stream[None, :-1], stream[None, 1:]
    torch.manual_seed(0)
    m = make(vocab)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(80):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 19 targets; the only ambiguity for a 4-token context is what follows "这本书很" (好 or 差), which
    # costs at best 2 ln 2 nats in all (the LSTM sees the whole history and can do better), far
    # below the ln(V) ~ 2.9 nats per token at the start
    assert y.numel() == 19
    assert loss.item() < 2 * math.log(2) / 19 + 0.05


@pytest.mark.parametrize("make", [lambda V: MLPLM(V, context=3, emb_dim=8, hidden=16),
                                  lambda V: LSTMLM(V, emb_dim=8, hidden_size=16)])
def test_mlp_and_lstm_can_start_at_the_unigram_model(make):
    V = 20
    torch.manual_seed(0)
    model = make(V)
    stream = torch.randint(0, 6, (300,), generator=torch.Generator().manual_seed(1))  # only ids 0..5
    counts = torch.bincount(stream, minlength=V)
    x, y = stream[:-1][:256].view(8, 32), stream[1:][:256].view(8, 32)
    with torch.no_grad():
        before = model(x, y)[1].item()
        model.init_output_bias(counts)
        after = model(x, y)[1].item()
    expected = ((counts.double() + 0.5) / (counts.sum() + 0.5 * V)).log()
    torch.testing.assert_close(model.head.bias.double(), expected, rtol=1e-6, atol=1e-6)
    assert before == pytest.approx(math.log(V), abs=0.05) and after < before - 1.0  # unigram: far below ln V
    with pytest.raises(ValueError, match=r"\(vocab_size,\) = \(20,\)"):
        model.init_output_bias(counts[:5])
    with pytest.raises(ValueError, match=">= 0"):
        model.init_output_bias(-counts)


# ---- truncated backpropagation through time ---------------------------------------------------------
def test_contiguous_batches_continue_each_other_row_by_row():
    from llmcourse.data.batching import ContiguousLMBatcher

    stream = torch.arange(1000) % 97
    b = ContiguousLMBatcher(stream, block_size=10, batch_size=4)
    row = 999 // 4
    assert b.windows_per_row == row // 10
    x0, y0 = b(0)
    x1, y1 = b(1, torch.Generator())  # the generator is not needed
    assert x0.shape == (4, 10) and torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(x1[:, 0], y0[:, -1])
    for r in range(4):  # row r is the r-th stretch of the stream
        assert torch.equal(x0[r], stream[r * row:r * row + 10])
    assert torch.equal(b(b.windows_per_row)[0], x0)  # after the last window a row starts again
    with pytest.raises(ValueError, match="fewer than block_size"):
        ContiguousLMBatcher(torch.arange(30), block_size=10, batch_size=4)


def test_carry_state_reads_windows_as_one_sequence_and_cuts_the_gradient():
    from llmcourse.models.lstm_lm import CarryState

    torch.manual_seed(0)
    lm = LSTMLM(30, emb_dim=8, hidden_size=12)
    model = CarryState(lm).train()
    x = torch.randint(0, 30, (3, 16), generator=torch.Generator().manual_seed(0))
    full, _ = lm(x)  # (3, 16, V) read in one go
    first, _ = model(x[:, :8])
    second, _ = model(x[:, 8:])  # continues from the state the first window left
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-5, rtol=1e-5)
    assert not model.state.h.requires_grad and not model.state.c.requires_grad
    model.eval()  # validation estimates start from zeros and leave the carried state alone
    carried = model.state.h.clone()
    torch.testing.assert_close(model(x[:, 8:])[0], lm(x[:, 8:])[0])
    assert torch.equal(model.state.h, carried)
    model.train()
    fresh, _ = model(x[:2, :8])  # another batch size: the state cannot continue, start afresh
    torch.testing.assert_close(fresh, lm(x[:2, :8])[0])
    with pytest.raises(TypeError, match="wraps an LSTMLM"):
        CarryState(MLPLM(30))
    # reset_every: the chain restarts from zeros every that many training windows
    bounded = CarryState(lm, reset_every=2).train()
    a, _ = bounded(x[:, :8])
    b, _ = bounded(x[:, 8:])
    c, _ = bounded(x[:, :8])  # the third window starts afresh
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, a)
    with pytest.raises(ValueError, match="reset_every"):
        CarryState(lm, reset_every=0)


def test_stream_nll_reads_the_whole_stream_with_the_state_carried():
    from llmcourse.models.lstm_lm import stream_nll

    torch.manual_seed(1)
    lm = LSTMLM(25, emb_dim=8, hidden_size=12)
    stream = torch.randint(0, 25, (70,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = lm(stream[:-1][None])
        direct = F.cross_entropy(logits[0], stream[1:]).item()
    for chunk in (1, 7, 69, 256):
        assert stream_nll(lm, stream, chunk) == pytest.approx(direct, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        stream_nll(lm, stream[:1])


def test_a_carried_state_run_resumes_exactly(tmp_path):
    from llmcourse.data.batching import ContiguousLMBatcher, LMBatcher
    from llmcourse.models.lstm_lm import CarryState
    from llmcourse.train import TrainConfig, train

    stream = torch.randint(0, 30, (3000,), generator=torch.Generator().manual_seed(0))
    batches = ContiguousLMBatcher(stream, block_size=8, batch_size=4)

    def run(stop_at=None, resume=False):
        torch.manual_seed(0)
        model = CarryState(LSTMLM(30, emb_dim=8, hidden_size=12), reset_every=3)
        cfg = TrainConfig(max_steps=8, lr=1e-2, warmup_steps=1, checkpoint_path=str(tmp_path / "ckpt.pt"),
                          checkpoint_interval=4, progress=False, eval_interval=None)
        train(model, batches, cfg, stop_at=stop_at, resume=resume)
        return model

    straight = run()
    run(stop_at=5)  # interrupted after 5 updates: mid-chain (calls 3..5 form one chain)
    resumed = run(resume=True)
    assert resumed.calls == straight.calls == 8
    for name, p in straight.lm.state_dict().items():
        assert torch.equal(p, resumed.lm.state_dict()[name]), name
    assert torch.equal(straight.state.h, resumed.state.h)
