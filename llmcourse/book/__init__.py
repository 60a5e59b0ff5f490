"""The book's tooling, the top layer: plots (``viz``), graded checks and student versions (``grading``,
``coursework``), shipped weights and their recipes (``pretrained``), the running perplexity table
(``results``), and how the stored notebook outputs are made (``record``), compared with a re-execution
(``numeric_compare``, used by nbval through the root ``conftest.py``) and measured on other numerical
paths (``reproducibility``). The chapter notebooks import it; the library and llmcourse.chapters never do.
"""
