"""Fine-tuning helpers: labelled subsets, a fine-tuning run that learns, accuracy, and attention
maps equal to Hugging Face BERT's own attention probabilities."""
import pytest
import torch

import transformers as tf  # a test requirement: its absence must fail the suite, not skip the BERT tests

from llmcourse.chapters.finetune import (attention_by_offset, bert_attention_maps, classification_logits, classifier_accuracy,
                                        finetune_classifier, labelled_subset)
from llmcourse.data.masking import BertVocab
from llmcourse.data.tokenizers import CharTokenizer
from llmcourse.models.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification, bert_from_hf
from llmcourse.train import TrainConfig


def test_labelled_subset_is_seeded_sample_without_replacement():
    items = list(range(100))
    a, b, c = labelled_subset(items, 30, 0), labelled_subset(items, 30, 0), labelled_subset(items, 30, 1)
    assert a == b and a != c
    assert len(set(a)) == 30 and set(a) <= set(items)
    assert labelled_subset(items, 10, 0) == a[:10]  # a smaller budget is a prefix of the larger one
    assert sorted(labelled_subset(items, 100, 3)) == items


@pytest.mark.parametrize("n, seed", [(0, 0), (101, 0), (2.5, 0), (10, -1), (True, 0)])
def test_labelled_subset_rejects_bad_arguments(n, seed):
    with pytest.raises(ValueError):
        labelled_subset(list(range(100)), n, seed)


def toy_task(n=64, seed=0):
    """Sequences whose label says whether token 5 occurs: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    seqs, labels = [], []
    for i in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        ids = torch.randint(6, 20, (length,), generator=g).tolist()
        if i % 2:
            ids[int(torch.randint(length, (1,), generator=g))] = 5
        seqs.append([1] + ids)
        labels.append(i % 2)
    return seqs, labels


def test_finetune_classifier_learns_a_toy_task_and_accuracy_counts():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=20, max_position=12, n_layer=1, n_head=2, n_embd=16,
                                                     dropout=0.0, pooling="mean"))
    seqs, labels = toy_task()
    before = classifier_accuracy(model, seqs, labels)
    history = finetune_classifier(model, seqs, labels, TrainConfig(max_steps=150, lr=1e-2, min_lr=1e-3,
                                                                    eval_interval=None), batch_size=16)
    assert len(history["train_loss"]) == 150
    after = classifier_accuracy(model, seqs, labels)
    assert after >= 0.9 > before
    # accuracy is the share of arg-max predictions (of the model's own forward pass) equal to the label
    with torch.no_grad():
        predicted = [int(model.eval()(torch.tensor([s]))[0].argmax()) for s in seqs[:8]]
    assert classifier_accuracy(model, seqs[:8], predicted) == 1.0
    assert classifier_accuracy(model, seqs[:8], [1 - p for p in predicted]) == 0.0
    assert classifier_accuracy(model, seqs[:8], predicted[:4] + [1 - p for p in predicted[4:]]) == 0.5


def test_finetune_and_accuracy_reject_bad_input():
    model = BertForMaskedLM(BertConfig(vocab_size=20, max_position=12, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        finetune_classifier(model, [[1, 2]], [0], TrainConfig(max_steps=1))
    clf = BertForSequenceClassification(BertConfig(vocab_size=20, max_position=12, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="match one to one"):
        classifier_accuracy(clf, [[1, 2], [3, 4]], [0])


@pytest.fixture(scope="module")
def hf_and_ours():
    cfg = tf.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                        max_position_embeddings=16, pad_token_id=0, attn_implementation="eager")
    torch.manual_seed(0)
    hf = tf.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # HF starts LayerNorms at (1, 0): perturb everything so a mix-up would show
        g = torch.Generator().manual_seed(1)
        for p in hf.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return hf, bert_from_hf(hf).eval()


def test_attention_maps_equal_hugging_face_attentions(hf_and_ours):
    hf, ours = hf_and_ours
    ids = torch.randint(1, 30, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    maps = bert_attention_maps(ours, ids, mask)
    assert len(maps) == 2
    for got, want in zip(maps, ref):
        assert got.shape == (3, 4, 10, 10)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        assert torch.all(got[mask[:, None, None, :].expand_as(got) == 0] == 0)  # padding keys get nothing
        torch.testing.assert_close(got.sum(-1), torch.ones(3, 4, 10))
    assert ours.training is False


def test_attention_by_offset_on_hand_made_maps():
    T = 5
    mask = torch.tensor([[1, 1, 1, 1, 0]])  # 4 real tokens
    left = torch.zeros(1, 2, T, T)  # every query looks at its left neighbour (position 0 at itself)
    for i in range(T):
        left[0, :, i, max(i - 1, 0)] = 1.0
    table = attention_by_offset([left, torch.full((1, 2, T, T), 0.25)], mask, offsets=(-1, 0, 1))
    # layer 0: offset -1 has queries 1..3 (all weight 1); offset 0 has queries 0..3, only query 0 at itself
    torch.testing.assert_close(table[0], torch.tensor([1.0, 0.25, 0.0]))
    torch.testing.assert_close(table[1], torch.tensor([0.25, 0.25, 0.25]))
    with pytest.raises(ValueError, match="empty"):
        attention_by_offset([], mask)
    with pytest.raises(ValueError, match="expected"):
        attention_by_offset([torch.zeros(1, 2, 3, 3)], mask)


def test_attention_maps_rejects_other_models():
    with pytest.raises(TypeError, match="BERT"):
        bert_attention_maps(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long))


def test_classification_logits_keep_the_order_and_ignore_padding():
    vocab = BertVocab.from_tokenizer(CharTokenizer(min_freq=1).train(["这本书很好很差"]))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=vocab.vocab_size, n_embd=16, n_head=2))
    seqs = [vocab.encode(t) for t in ["这本书很好很好", "很差", "好书"]]
    got = classification_logits(model, seqs, batch_size=2)
    with torch.no_grad():
        model.eval()
        one_by_one = torch.cat([model(torch.tensor([s]))[0] for s in seqs])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=1e-5)
