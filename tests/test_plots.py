"""The report's figures read at a glance: heatmap rows name only the fields that vary, compute.png has
plain ticks, its legend beside the data and an interval for a method with one point, the landscapes
share one colour scale, and an AUROC left empty says why."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from flatbench.measures.landscape import landscape_figure  # noqa: E402
from flatbench.report.compute import compute_figure  # noqa: E402
from flatbench.report.flatness_tables import auroc_figure  # noqa: E402
from flatbench.report.plots import heatmap_labels  # noqa: E402


def test_heatmap_rows_name_only_the_fields_that_vary():
    """Regression: rows read 'digits-resnet | I-FGSM | 32 | - | - | - | - | -', without field names."""
    idx = pd.MultiIndex.from_tuples([("digits-resnet", "I-FGSM", 32, "-", "-"), ("digits-resnet", "PGN", 32, 0.5, 3),
                                     ("digits-cnn", "PGN", 32, 0.5, 3)], names=["surrogate", "attack", "eps", "beta", "zeta"])
    assert heatmap_labels(pd.DataFrame({"t": [1, 2, 3]}, index=idx)) == [
        "surrogate=digits-resnet, attack=I-FGSM", "surrogate=digits-resnet, attack=PGN, beta=0.5, zeta=3",
        "surrogate=digits-cnn, attack=PGN, beta=0.5, zeta=3"]
    one = pd.MultiIndex.from_tuples([("digits-cnn", "I-FGSM", 32), ("digits-cnn", "PGN", 32)],
                                    names=["surrogate", "attack", "eps"])
    assert heatmap_labels(pd.DataFrame({"t": [1, 2]}, index=one)) == ["I-FGSM", "PGN"]


def _compute_table():
    rows = []
    for attack, costs in (("MI-FGSM", [10, 40, 160]), ("PGN", [400])):   # PGN: one point
        for c in costs:
            rows.append({"cell_id": f"{attack}{c}", "surrogate": "digits-cnn", "attack": attack, "eps": 32.0,
                         "norm": "linf", "targeted": False, "seed": 0, "budget": np.nan, "step": 10, "steps": 10,
                         "n_images": 100, "grad_evals_per_image": float(c), "asr": 40.0 + c / 20,
                         "asr_ci_low": 30.0 + c / 20, "asr_ci_high": 50.0 + c / 20, "n_targets": 5})
    return pd.DataFrame(rows)


def test_compute_plot_has_plain_ticks_an_outside_legend_and_an_interval_for_one_point():
    """Regression: ticks read '2×10¹', the legend sat over the data, and a method with one point had no
    interval at all (a band of one point is not drawn)."""
    fig = compute_figure(_compute_table())
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ticks and all("10^" not in t and "times" not in t and "$" not in t for t in ticks), ticks
    assert {"10", "100"} <= set(ticks)
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1 - 1
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 1 and len(ax.collections) >= 2   # PGN's error bar; MI-FGSM's band and the front


def _landscape(loss_offset, scale):
    t = np.linspace(-1, 1, 5)
    rows = [{"image_id": "d1", "kind": "2d", "t": a, "s": b, "loss": loss_offset + scale * (a * a + b * b)}
            for a in t for b in t]
    rows += [{"image_id": "d1", "kind": k, "t": a, "s": 0.0, "loss": loss_offset + scale * a * a}
             for k in ("random", "gradient") for a in t]
    return pd.DataFrame(rows)


def test_compared_landscapes_share_one_colour_scale():
    """Regression: each 2-D panel had its own colour scale (I-FGSM 8-16, GNP 8.4-12.6), which misleads the
    flatness comparison the figure exists for."""
    fig = landscape_figure({"I-FGSM": _landscape(8, 4), "GNP": _landscape(8.4, 2)}, ["d1"])
    contours = [c for ax in fig.axes for c in ax.collections if isinstance(c, matplotlib.contour.ContourSet)]
    assert len(contours) == 2 and np.array_equal(contours[0].levels, contours[1].levels)
    assert contours[0].levels[0] <= 8 and contours[0].levels[-1] >= 16
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 1


def test_an_empty_auroc_says_why():
    sub = pd.DataFrame([{"cell_id": "a", "surrogate": "digits-cnn", "attack": "PGN", "metric": "sharp_mean",
                         "auroc": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n_images": 12, "n_transferred": 5},
                        {"cell_id": "b", "surrogate": "digits-cnn", "attack": "MI-FGSM", "metric": "sharp_mean",
                         "auroc": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_images": 12, "n_transferred": 12}])
    texts = [t.get_text() for t in auroc_figure(sub, "sharp_mean").axes[0].texts]
    assert texts == ["no AUROC: all 12 transferred"]
