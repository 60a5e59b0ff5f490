"""The book's tooling: how the stored notebook outputs are made (``record``), how a re-execution is
compared with them (``numeric_compare``, used by nbval through the root ``conftest.py``), and how far
the numbers move on other numerical paths (``reproducibility``). The chapters never import it.
"""
