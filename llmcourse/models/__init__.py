"""Language models of the book, from counts to Transformers."""
from .bert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, bert_from_hf
from .gpt import GPT, IGNORE_INDEX, GPTConfig
from .hf_convert import gpt_from_hf, gpt_to_hf
from .lstm_lm import LSTMLM
from .mlp_lm import MLPLM
from .ngram import NGramLM

__all__ = ["BertConfig", "BertForMaskedLM", "BertForSequenceClassification", "BertModel", "bert_from_hf", "GPT", "GPTConfig", "IGNORE_INDEX", "LSTMLM", "MLPLM", "NGramLM", "gpt_from_hf", "gpt_to_hf"]
