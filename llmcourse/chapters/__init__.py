"""One chapter's teaching helpers each: the code a chapter derives in its cells, kept so later cells and
tests can use it. They stand on the library (core, data, models, train, generate, evaluate), never on
the book's tooling; the module map in CONTRIBUTING.md says which chapter each serves."""
