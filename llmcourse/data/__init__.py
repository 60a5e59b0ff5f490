"""The data layer: the corpora (corpus), tokenizers, language-model batches (batching) and BERT's masking
(masking). It imports only llmcourse.core."""
