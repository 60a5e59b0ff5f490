import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from llmcourse.book import viz  # noqa: E402


def test_a_cjk_font_is_installed_and_renders_chinese():
    viz.setup()
    font = viz.find_cjk_font()
    assert font is not None, f"no CJK font: {viz.INSTALL_HINT}"
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    path = findfont(FontProperties(family=font), fallback_to_default=False)
    assert FT2Font(path).get_char_index(ord("语")) != 0, "the chosen font has no glyph for 语"


def test_plot_helpers_and_their_errors():
    viz.setup()
    ax = viz.plot_curves({"训练": [3, 2, 1], "验证": [3, 2.5, 2]}, "步数", "损失")
    assert ax.get_xlabel() == "步数" and len(ax.lines) == 2
    with pytest.raises(ValueError, match="has 3 points but x has 2"):
        viz.plot_curves({"a": [1, 2, 3]}, "x", "y", x=[1, 2])
    ax = viz.heatmap(np.eye(2), ["我", "你"], ["甲", "乙"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["甲", "乙"]
    with pytest.raises(ValueError, match="does not match"):
        viz.heatmap(np.eye(3), ["a"], ["b"])
    plt.close("all")
