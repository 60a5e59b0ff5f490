"""BERT models: equal to Hugging Face's BERT (tiny random configs, nothing downloaded), padding
really masked, bidirectional attention, losses, encoder transfer, and clear errors for bad input."""
import pytest
import torch
import torch.nn.functional as F

from llmcourse.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    bert_from_hf,
)
from llmcourse.train import TrainConfig, train

import transformers as tf  # noqa: E402  a test requirement: its absence must fail the suite, not skip

V, T = 40, 12


def hf_config(**kw):
    cfg = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.1,
               attention_probs_dropout_prob=0.1, pad_token_id=0)
    cfg.update(kw)
    return tf.BertConfig(**cfg)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    mask[1, 7:] = 0  # padded rows, as a real batch has
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return ids, mask


def randomise(model):
    """HF initialises LayerNorm to (1, 0) and biases to 0: perturb everything so a mix-up shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def hf_mlm():
    torch.manual_seed(0)
    return randomise(tf.BertForMaskedLM(hf_config())).eval()


def test_mlm_hidden_states_and_logits_equal_hugging_face(hf_mlm):
    ours = bert_from_hf(hf_mlm).eval()
    assert isinstance(ours, BertForMaskedLM)
    ids, mask = batch()
    with torch.no_grad():
        ref = hf_mlm(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = ours.bert(ids, mask)
        logits, loss = ours(ids, mask)
    assert loss is None
    real = mask.bool()  # HF and ours agree on padded positions too, but only real ones matter
    torch.testing.assert_close(hidden[real], ref.hidden_states[-1][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)


def test_mlm_loss_equals_hugging_face_and_uses_only_labelled_positions(hf_mlm):
    ours = bert_from_hf(hf_mlm).eval()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, [1, 4, 9]] = ids[0, [1, 4, 9]]
    labels[1, 2] = 5
    with torch.no_grad():
        ref = hf_mlm(input_ids=ids, attention_mask=mask, labels=labels)
        logits, loss = ours(ids, mask, labels=labels)
        full, _ = ours(ids, mask)
    assert logits.shape == (4, V)  # only the 4 labelled positions
    torch.testing.assert_close(logits, full[labels != -100], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_token_type_ids_match_hugging_face(hf_mlm):
    ours = bert_from_hf(hf_mlm).eval()
    ids, mask = batch()
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        ref = hf_mlm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, token_type_ids=types)[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_classification_logits_and_loss_equal_hugging_face():
    torch.manual_seed(0)
    hf = randomise(tf.BertForSequenceClassification(hf_config(num_labels=3))).eval()
    ours = bert_from_hf(hf).eval()
    assert isinstance(ours, BertForSequenceClassification)
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        logits, loss = ours(ids, mask, labels=labels)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_without_a_mask_padding_changes_the_output_and_with_it_nothing_changes():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4)).eval()
    short = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        a = model.bert(short)[0, :4]
        b = model.bert(padded, mask)[0, :4]
        c = model.bert(padded)[0, :4]  # padding attended to
        torch.testing.assert_close(model(short)[0], model(padded, mask)[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_attention_is_bidirectional():
    # Changing the LAST token changes the FIRST position's output (a causal model could not).
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4)).eval()
    x = torch.tensor([[5, 6, 7, 8]])
    y = torch.tensor([[5, 6, 7, 9]])
    with torch.no_grad():
        hx, hy = model.bert(x), model.bert(y)
    assert not torch.allclose(hx[0, 0], hy[0, 0], atol=1e-5)


def test_decoder_is_tied_to_the_word_embeddings():
    model = BertForMaskedLM(BertConfig(vocab_size=V, n_embd=32, n_head=4))
    assert model.decoder.weight is model.bert.tok_emb.weight
    n_unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_params() == n_unique


def test_load_encoder_copies_the_encoder_only():
    cfg = BertConfig(vocab_size=V, n_embd=32, n_head=4)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(cfg)
    torch.manual_seed(1)
    clf = BertForSequenceClassification(cfg)
    head_before = clf.classifier.weight.clone()
    clf.load_encoder(mlm)
    for (n1, p1), (n2, p2) in zip(clf.bert.state_dict().items(), mlm.bert.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(clf.classifier.weight, head_before)
    with pytest.raises(TypeError, match="BERT model"):
        clf.load_encoder(torch.nn.Linear(2, 2))


def test_gradients_reach_every_parameter_and_train_loop_runs_with_dict_batches():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4, dropout=0.0)
    model = BertForSequenceClassification(cfg)
    ids, mask = batch()
    labels = torch.tensor([0, 1, 1])
    _, loss = model(ids, mask, labels=labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name

    def get_batch(i, generator):
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    hist = train(model, get_batch, TrainConfig(max_steps=30, lr=3e-3, warmup_steps=0, eval_interval=None))
    assert hist["train_loss"][-1] < 0.1 < hist["train_loss"][0]  # it can fit three examples


def test_mlm_loss_equals_cross_entropy_by_hand_and_refuses_a_batch_without_labels():
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4)).eval()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 0], labels[2, 1] = 3, 7
    with torch.no_grad():
        logits, loss = model(ids, mask, labels=labels)
        full = model(ids, mask)[0]
    expected = F.cross_entropy(torch.stack([full[0, 0], full[2, 1]]), torch.tensor([3, 7]))
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="no target in this batch"):
        model(ids, mask, labels=torch.full_like(ids, -100))


def test_bad_inputs_raise_clear_errors():
    cfg = BertConfig(vocab_size=V, max_position=8, n_embd=32, n_head=4)
    mlm, clf = BertForMaskedLM(cfg), BertForSequenceClassification(cfg)
    ok = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="batch, time"):
        mlm(torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer token ids"):
        mlm(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        mlm([[1, 2, 3]])
    with pytest.raises(ValueError, match="exceeds max_position 8"):
        mlm(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=rf"holds ids in \[\d+, {V}\] but the vocabulary has {V} ids"):
        mlm(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match=r"holds ids in \[-1, 1\]"):
        mlm(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        mlm(ok, torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="1 for real tokens"):
        mlm(ok, torch.tensor([[1, 2, 1]]))
    with pytest.raises(ValueError, match="no real token"):
        mlm(ok, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids must lie"):
        mlm(ok, token_type_ids=torch.tensor([[0, 2, 0]]))
    with pytest.raises(ValueError, match="labels must have the same shape as the inputs"):
        mlm(ok, labels=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels holds ids in \[40, 40\] but there are 40 token ids"):
        mlm(ok, labels=torch.tensor([[-100, V, -100]]))
    with pytest.raises(ValueError, match="one class id per sequence"):
        clf(ok, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"there are 2 classes \(num_labels\)"):
        clf(ok, labels=torch.tensor([2]))
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="pad_id"):
        BertConfig(vocab_size=5, pad_id=5)
    with pytest.raises(TypeError, match="BertConfig"):
        BertForMaskedLM({"vocab_size": 5})


def test_bert_from_hf_rejects_what_it_cannot_convert():
    with pytest.raises(ValueError, match="hidden_act"):
        bert_from_hf(tf.BertForMaskedLM(hf_config(hidden_act="relu")))
    with pytest.raises(ValueError, match="num_labels"):
        bert_from_hf(tf.BertForSequenceClassification(hf_config(num_labels=1)))
    with pytest.raises(TypeError, match="BertForMaskedLM or BertForSequenceClassification"):
        bert_from_hf(tf.BertModel(hf_config()))


def test_mean_pooling_averages_real_tokens_only():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4, pooling="mean")
    model = BertForSequenceClassification(cfg).eval()
    short, padded = torch.tensor([[5, 6, 7]]), torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        h = model.bert(short)
        expected = model.classifier(torch.tanh(model.pooler(h.mean(dim=1))))
        torch.testing.assert_close(model(short)[0], expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(model(padded, mask)[0], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        BertConfig(pooling="max")


def test_attention_dropout_is_its_own_setting_as_in_hugging_face():
    follows = BertForMaskedLM(BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4, dropout=0.2))
    assert follows.config.attention_dropout is None and follows.bert.layers[0].attn.dropout == 0.2  # None: as dropout
    cfg = BertConfig(vocab_size=V, max_position=16, n_embd=32, n_head=4, dropout=0.1, attention_dropout=0.0)
    model = BertForSequenceClassification(cfg)
    assert all(layer.attn.dropout == 0.0 for layer in model.bert.layers)
    assert model.drop.p == 0.1 and model.bert.layers[0].drop.p == 0.1
    converted = bert_from_hf(tf.BertForMaskedLM(hf_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)))
    assert (converted.config.dropout, converted.config.attention_dropout) == (0.1, 0.0)
    with pytest.raises(ValueError, match=r"attention_dropout must be a float in \[0, 1\) or None"):
        BertConfig(attention_dropout=1.0)
