# Root conftest: loaded by every pytest run from the repository root, so `pytest --nbval notebooks/...`
# compares outputs exactly as the README's test command does (see llmcourse/book/nbval_plugin.py).
pytest_plugins = ["llmcourse.book.nbval_plugin"]
