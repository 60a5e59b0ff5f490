"""The bottom layer: seeds, devices and presets (runtime), input checks shared by every model, batcher and
decoder (checks), and atomic, checked files (checkpoint). It imports nothing else from llmcourse."""
