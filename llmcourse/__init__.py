"""llmcourse: the shared package of the book *How large language models work*.

Each chapter derives a piece in its cells; the package keeps the same code for later chapters.
"""
from llmcourse.core.runtime import PRESETS, Preset, get_device, get_preset, set_seed

__version__ = "0.1.0"
__all__ = ["PRESETS", "Preset", "get_device", "get_preset", "set_seed", "__version__"]
