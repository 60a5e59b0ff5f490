"""GPTForSequenceClassification against Hugging Face's GPT2ForSequenceClassification (a tiny random
config: nothing is downloaded), its padding invariance, the copy of a language model, training with the
book's fine-tuning loop, and its errors."""
import pytest
import torch
import torch.nn.functional as F

import transformers

from llmcourse.chapters.finetune import classification_logits, finetune_classifier, gpt_classifier_ids
from llmcourse.data.tokenizers import CharTokenizer, EOS_ID, PAD_ID
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.gpt_classifier import GPTForSequenceClassification
from llmcourse.models.hf_convert import gpt_to_hf
from llmcourse.train import TrainConfig

TINY = dict(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16)


def randomized_classifier(seed=0, **overrides):
    torch.manual_seed(seed)
    model = GPTForSequenceClassification(GPTConfig(**{**TINY, **overrides}))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random values everywhere (biases, LayerNorms), so a wrong mapping shows
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def padded_batch():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 0, 0, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([6, 3, 1])[:, None]).long()
    return ids, mask


def test_logits_equal_hugging_face_gpt2_for_sequence_classification():
    ours = randomized_classifier()
    lm = gpt_to_hf(ours.body)
    config = transformers.GPT2Config(**{**lm.config.to_dict(), "num_labels": 2, "pad_token_id": 0})
    hf = transformers.GPT2ForSequenceClassification(config).eval()
    hf.transformer.load_state_dict(lm.transformer.state_dict())
    with torch.no_grad():
        hf.score.weight.copy_(ours.score.weight)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got, _ = ours(ids, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_padding_after_the_last_token_changes_nothing():
    model = randomized_classifier()
    ids, mask = padded_batch()
    with torch.no_grad():
        batched, _ = model(ids, mask)
        garbage = ids.clone()
        garbage[mask == 0] = 39  # any id at the padded positions
        again, _ = model(garbage, mask)
        alone = torch.cat([model(ids[b:b + 1, :int(mask[b].sum())])[0] for b in range(3)])
    torch.testing.assert_close(batched, again, rtol=0, atol=0)
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-6)


def test_the_loss_is_the_cross_entropy_of_the_labels():
    model = randomized_classifier()
    ids, mask = padded_batch()
    labels = torch.tensor([1, 0, 1])
    logits, loss = model(ids, mask, labels)
    assert torch.equal(loss, F.cross_entropy(logits, labels))
    assert model(ids, mask)[1] is None


def test_from_lm_copies_the_body_and_leaves_the_language_model_alone():
    torch.manual_seed(3)
    lm = GPT(GPTConfig(**TINY, head_bias=True)).eval()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    clf = GPTForSequenceClassification.from_lm(lm)
    for k, v in clf.body.state_dict().items():
        assert torch.equal(v, before[k]) and v.data_ptr() != lm.state_dict()[k].data_ptr()
    with torch.no_grad():
        clf.body.transformer.wte.weight.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in lm.state_dict().items())


def test_the_fine_tuning_loop_trains_it_and_leaves_the_unused_output_bias():
    tok = CharTokenizer(min_freq=1).train(["很好很好", "很差很差", "不错", "失望"])
    texts, labels = ["很好", "不错很好", "很差", "失望很差"], [1, 1, 0, 0]
    config = GPTConfig(vocab_size=len(tok), block_size=8, n_layer=1, n_head=2, n_embd=16, head_bias=True)
    torch.manual_seed(0)
    model = GPTForSequenceClassification(config)
    bias_before = model.body.lm_head.bias.detach().clone()
    seqs = [gpt_classifier_ids(tok, t, config.block_size) for t in texts]
    finetune_classifier(model, seqs, labels, TrainConfig(max_steps=60, lr=1e-2, warmup_steps=1, eval_interval=None),
                        batch_size=4, pad_id=PAD_ID)
    assert classification_logits(model, seqs, PAD_ID).argmax(1).tolist() == labels
    assert torch.equal(model.body.lm_head.bias, bias_before)


def test_gpt_classifier_ids_frame_the_review_with_end_tokens_and_cut_it():
    tok = CharTokenizer(min_freq=1).train(["很好不错"])
    assert gpt_classifier_ids(tok, "很好", 8) == [EOS_ID, *tok.encode("很好"), EOS_ID]
    long = gpt_classifier_ids(tok, "很好不错" * 3, 6)
    assert long == [EOS_ID, *tok.encode("很好不错")[:4], EOS_ID] and len(long) == 6
    with pytest.raises(ValueError, match="max_len must be an int >= 3"):
        gpt_classifier_ids(tok, "很好", 2)


def test_bad_inputs_are_refused_with_what_is_expected():
    model = randomized_classifier()
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="num_labels must be an int >= 2"):
        GPTForSequenceClassification(GPTConfig(**TINY), num_labels=1)
    with pytest.raises(TypeError, match="lm must be a llmcourse GPT"):
        GPTForSequenceClassification.from_lm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="right padding"):
        model(ids, mask.flip(1))  # left padding: the last position is not the last real token
    with pytest.raises(ValueError, match="at least one real token"):
        model(ids, torch.zeros_like(mask))
    with pytest.raises(ValueError, match=r"expected \(3, 6\)"):
        model(ids, mask[:, :4])
    with pytest.raises(ValueError, match="labels"):
        model(ids, mask, torch.tensor([0, 1, 2]))
