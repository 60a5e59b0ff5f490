"""Language models of the book, from counts to Transformers."""
from llmcourse.models.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, bert_from_hf
from llmcourse.models.gpt import GPT, GPTConfig, KVCache
from llmcourse.models.gpt_classifier import GPTForSequenceClassification
from llmcourse.models.hf_convert import gpt_from_hf, gpt_to_hf
from llmcourse.models.lstm_lm import LSTMLM
from llmcourse.models.mlp_lm import MLPLM
from llmcourse.models.ngram import NGramLM

__all__ = ["BertConfig", "BertForMaskedLM", "BertForSequenceClassification", "BertModel", "bert_from_hf", "GPT", "GPTConfig", "GPTForSequenceClassification", "KVCache", "LSTMLM", "MLPLM", "NGramLM", "gpt_from_hf", "gpt_to_hf"]
