"""Milestones on the road to large language models, for chapter 1's timeline.

Each entry has the year of first public release (conference or arXiv), the parameter counts *as the
paper itself published them* (``()`` when none was published, or the idea has no parameters), and a
short citation. Only published numbers are listed: GPT-4's size, for example, was never disclosed,
so it has none here.
"""
from __future__ import annotations

from dataclasses import dataclass

ERAS = ("foundations", "statistical", "neural", "pretrained", "aligned")


@dataclass(frozen=True)
class Milestone:
    name: str
    year: int
    era: str  # one of ERAS
    what: str  # one line: why it matters
    citation: str  # authors (year). Title. Venue.
    params: tuple[int, ...] = ()  # published sizes in parameters, smallest first

    def __post_init__(self) -> None:
        if self.era not in ERAS:
            raise ValueError(f"unknown era {self.era!r} for {self.name}; expected one of {ERAS}")
        if list(self.params) != sorted(self.params) or any(p <= 0 for p in self.params):
            raise ValueError(f"params of {self.name} must be positive and sorted, got {self.params}")

    @property
    def largest(self) -> int | None:
        """The largest published size, or ``None``."""
        return self.params[-1] if self.params else None


M, B = 10**6, 10**9

MILESTONES: tuple[Milestone, ...] = (
    Milestone("Markov chains on Eugene Onegin", 1913, "foundations",
              "letter sequences of a poem counted as a chain: the first statistical model of text",
              "Markov, A. A. (1913). An example of statistical investigation of the text 'Eugene Onegin' "
              "concerning the connection of samples in chains. Bulletin of the Imperial Academy of Sciences."),
    Milestone("Shannon's n-gram approximations", 1948, "foundations",
              "letter and word n-gram models generate ever more English-like text; entropy of a source",
              "Shannon, C. E. (1948). A mathematical theory of communication. Bell System Technical Journal 27."),
    Milestone("Turing test", 1950, "foundations",
              "'Can machines think?' replaced by the imitation game: judge a machine by its conversation",
              "Turing, A. M. (1950). Computing machinery and intelligence. Mind 59(236)."),
    Milestone("Backpropagation", 1986, "neural",
              "gradients of multi-layer networks by the chain rule: hidden layers learn representations",
              "Rumelhart, D. E., Hinton, G. E., Williams, R. J. (1986). Learning representations by "
              "back-propagating errors. Nature 323."),
    Milestone("Statistical machine translation", 1990, "statistical",
              "translation as a noisy channel: an n-gram language model times a translation model",
              "Brown, P. F. et al. (1990). A statistical approach to machine translation. "
              "Computational Linguistics 16(2)."),
    Milestone("Kneser–Ney smoothing", 1995, "statistical",
              "back off to continuation counts: the best n-gram smoothing for two decades",
              "Kneser, R., Ney, H. (1995). Improved backing-off for m-gram language modeling. ICASSP 1995."),
    Milestone("LSTM", 1997, "neural",
              "a gated recurrent cell that keeps gradients alive over long sequences",
              "Hochreiter, S., Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8)."),
    Milestone("Neural probabilistic LM (NPLM)", 2003, "neural",
              "word embeddings + an MLP predict the next word; beats smoothed n-grams",
              "Bengio, Y., Ducharme, R., Vincent, P., Jauvin, C. (2003). A neural probabilistic language "
              "model. JMLR 3."),
    Milestone("Deep belief nets", 2006, "neural",
              "greedy layer-wise pretraining makes deep networks trainable",
              "Hinton, G. E., Osindero, S., Teh, Y.-W. (2006). A fast learning algorithm for deep belief "
              "nets. Neural Computation 18(7)."),
    Milestone("RNN language model", 2010, "neural",
              "a recurrent network conditions on the whole history, not n - 1 words",
              "Mikolov, T., Karafiát, M., Burget, L., Černocký, J., Khudanpur, S. (2010). Recurrent neural "
              "network based language model. Interspeech 2010."),
    Milestone("AlexNet", 2012, "neural",
              "a GPU-trained CNN wins ImageNet by a wide margin (vision, for scale)",
              "Krizhevsky, A., Sutskever, I., Hinton, G. E. (2012). ImageNet classification with deep "
              "convolutional neural networks. NeurIPS 2012.", (60 * M,)),
    Milestone("word2vec", 2013, "neural",
              "cheap word embeddings from predicting context words (skip-gram, CBOW)",
              "Mikolov, T., Chen, K., Corrado, G., Dean, J. (2013). Efficient estimation of word "
              "representations in vector space. arXiv:1301.3781."),
    Milestone("seq2seq", 2014, "neural",
              "an encoder LSTM reads, a decoder LSTM writes: end-to-end translation",
              "Sutskever, I., Vinyals, O., Le, Q. V. (2014). Sequence to sequence learning with neural "
              "networks. NeurIPS 2014.", (384 * M,)),
    Milestone("Attention", 2014, "neural",
              "the decoder looks back at every encoder state, weighted by relevance",
              "Bahdanau, D., Cho, K., Bengio, Y. (2014). Neural machine translation by jointly learning to "
              "align and translate. arXiv:1409.0473 (ICLR 2015)."),
    Milestone("Transformer", 2017, "pretrained",
              "attention only, no recurrence: parallel training, the architecture of every LLM since",
              "Vaswani, A. et al. (2017). Attention is all you need. NeurIPS 2017.", (65 * M, 213 * M)),
    Milestone("RL from human preferences", 2017, "aligned",
              "a reward model learned from human comparisons of behaviour, then optimised with RL",
              "Christiano, P. et al. (2017). Deep reinforcement learning from human preferences. NeurIPS 2017."),
    Milestone("ELMo", 2018, "pretrained",
              "contextual word vectors from a pretrained bidirectional LSTM language model",
              "Peters, M. E. et al. (2018). Deep contextualized word representations. NAACL 2018."),
    Milestone("GPT-1", 2018, "pretrained",
              "generative pretraining of a Transformer decoder, then fine-tuning on each task",
              "Radford, A., Narasimhan, K., Salimans, T., Sutskever, I. (2018). Improving language "
              "understanding by generative pre-training. OpenAI. (Size 117M as given in the GPT-2 paper.)",
              (117 * M,)),
    Milestone("BERT", 2018, "pretrained",
              "masked-LM pretraining of a bidirectional Transformer encoder; fine-tune for understanding",
              "Devlin, J., Chang, M.-W., Lee, K., Toutanova, K. (2018). BERT: Pre-training of deep "
              "bidirectional transformers for language understanding. arXiv:1810.04805 (NAACL 2019).",
              (110 * M, 340 * M)),
    Milestone("GPT-2", 2019, "pretrained",
              "a larger LM does tasks zero-shot, from the prompt alone",
              "Radford, A. et al. (2019). Language models are unsupervised multitask learners. OpenAI.",
              (117 * M, 345 * M, 762 * M, 1542 * M)),
    Milestone("Megatron-LM", 2019, "pretrained",
              "model parallelism trains an 8.3B-parameter GPT-2-style model",
              "Shoeybi, M. et al. (2019). Megatron-LM: Training multi-billion parameter language models "
              "using model parallelism. arXiv:1909.08053.", (8300 * M,)),
    Milestone("T5", 2019, "pretrained",
              "every task as text-to-text with one encoder-decoder",
              "Raffel, C. et al. (2019). Exploring the limits of transfer learning with a unified "
              "text-to-text transformer. arXiv:1910.10683 (JMLR 2020).", (11 * B,)),
    Milestone("GPT-3", 2020, "pretrained",
              "175B parameters: few-shot learning in context, without gradient updates",
              "Brown, T. B. et al. (2020). Language models are few-shot learners. NeurIPS 2020.",
              (125 * M, 350 * M, 760 * M, 1300 * M, 2700 * M, 6700 * M, 13 * B, 175 * B)),
    Milestone("Gopher", 2021, "pretrained",
              "a 280B-parameter model and a study of scale across 152 tasks",
              "Rae, J. W. et al. (2021). Scaling language models: Methods, analysis & insights from "
              "training Gopher. arXiv:2112.11446.", (280 * B,)),
    Milestone("InstructGPT (RLHF)", 2022, "aligned",
              "supervised fine-tuning + reward model + PPO: a 1.3B model preferred to 175B GPT-3",
              "Ouyang, L. et al. (2022). Training language models to follow instructions with human "
              "feedback. NeurIPS 2022.", (1300 * M, 6 * B, 175 * B)),
    Milestone("Chinchilla", 2022, "pretrained",
              "compute-optimal scaling: 70B parameters on 1.4T tokens beat much larger models",
              "Hoffmann, J. et al. (2022). Training compute-optimal large language models. "
              "arXiv:2203.15556.", (70 * B,)),
    Milestone("PaLM", 2022, "pretrained",
              "a 540B dense Transformer trained with the Pathways system",
              "Chowdhery, A. et al. (2022). PaLM: Scaling language modeling with Pathways. "
              "arXiv:2204.02311.", (8 * B, 62 * B, 540 * B)),
    Milestone("GLM-130B", 2022, "pretrained",
              "an open bilingual (Chinese-English) 130B model",
              "Zeng, A. et al. (2022). GLM-130B: An open bilingual pre-trained model. arXiv:2210.02414.",
              (130 * B,)),
    Milestone("ChatGPT", 2022, "aligned",
              "an RLHF-tuned chat model released to the public (size not published)",
              "OpenAI (2022). Introducing ChatGPT. Blog post, 30 November 2022."),
    Milestone("LLaMA", 2023, "pretrained",
              "openly released 7B-65B models trained on public data only",
              "Touvron, H. et al. (2023). LLaMA: Open and efficient foundation language models. "
              "arXiv:2302.13971.", (7 * B, 13 * B, 33 * B, 65 * B)),
    Milestone("DPO", 2023, "aligned",
              "preference fine-tuning without a separate reward model or RL loop",
              "Rafailov, R. et al. (2023). Direct preference optimization: Your language model is secretly "
              "a reward model. NeurIPS 2023."),
)


def with_parameters() -> list[Milestone]:
    """Milestones whose papers published a parameter count (the log-axis part of the timeline)."""
    return [m for m in MILESTONES if m.params]


def without_parameters() -> list[Milestone]:
    """Ideas and models with no published parameter count (the plain timeline)."""
    return [m for m in MILESTONES if not m.params]


def format_params(count: int) -> str:
    """A parameter count as people write it: 117M, 1.5B, 175B."""
    if not isinstance(count, int) or count <= 0:
        raise ValueError(f"a parameter count must be a positive int, got {count!r}")
    if count >= B:
        value, unit = count / B, "B"
    else:
        value, unit = count / M, "M"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return text + unit
