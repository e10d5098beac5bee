"""The paper's figures as plotly divs (plotly.js is served locally, see ``views.plotly_js``).

Each function takes plain arrays and returns an HTML fragment; the views decide what data
to show. Axes carry their units.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline import gz2, units
from pipeline.learning.metrics import MORPHOLOGY_CLASSES, WITHIN_DEX

ML_AXIS = f"M/L_g [{units.MASS_TO_LIGHT}]"
COLOURS = {
    "train": "#1a5fb4",
    "val": "#e66100",
    "test": "#26a269",
    "irregular": "#c01c28",
    "edge-on": "#e66100",
    "disk": "#1a5fb4",
    "elliptical": "#813d9c",
}
CONFIG = {"displaylogo": False, "responsive": True}


def to_div(figure: go.Figure, div_id: str, height: int = 380) -> str:
    figure.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50}, template="plotly_white")
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def ml_histogram(by_split: dict[str, np.ndarray], div_id: str = "ml-histogram") -> str:
    """Fig. 2: the distribution of the target M/L per split, on a log axis."""
    figure = go.Figure()
    for split, values in by_split.items():
        values = np.asarray(values, dtype=float)
        values = values[values > 0]
        figure.add_histogram(
            x=np.log10(values),
            name=f"{split} ({len(values)})",
            opacity=0.6,
            nbinsx=40,
            marker_color=COLOURS.get(split),
            histnorm="probability density",
        )
    figure.update_layout(barmode="overlay", title="Target M/L per split", xaxis_title=f"log10 {ML_AXIS}", yaxis_title="density")
    return to_div(figure, div_id)


def predicted_vs_true(predicted: np.ndarray, target: np.ndarray, div_id: str = "pred-vs-true") -> str:
    """Figs. 4 and 7: density of predicted against true M/L on log axes, with the 1:1 line."""
    x, y = np.log10(target), np.log10(predicted)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    bins = {"start": lo, "end": hi, "size": max(hi - lo, 1e-3) / 40}
    empty_white = [[0.0, "rgba(255,255,255,0)"], [1e-9, "#deebf7"], [0.5, "#3182bd"], [1.0, "#08306b"]]
    figure = go.Figure(go.Histogram2d(x=x, y=y, xbins=bins, ybins=bins, colorscale=empty_white, colorbar={"title": "galaxies"}))
    figure.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "red", "dash": "dash"}, name="1:1")
    figure.update_layout(
        title="Predicted against true M/L (test split)",
        xaxis_title=f"log10 true {ML_AXIS}",
        yaxis_title=f"log10 predicted {ML_AXIS}",
        showlegend=False,
    )
    figure.update_yaxes(scaleanchor="x", scaleratio=1)
    return to_div(figure, div_id, height=440)


def error_histograms(dex: np.ndarray, l1: np.ndarray, div_id: str = "errors") -> str:
    """Fig. 4's error panels: log10(pred / true) in dex with the 0.15 dex lines, and the per-galaxy L1."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("error [dex]", "L1 per galaxy (error floor 5%)"))
    figure.add_histogram(x=dex, nbinsx=50, marker_color="#1a5fb4", row=1, col=1, name="dex")
    for edge in (-WITHIN_DEX, WITHIN_DEX):
        figure.add_vline(x=edge, line_dash="dash", line_color="red", row=1, col=1)
    figure.add_histogram(x=l1, nbinsx=50, marker_color="#26a269", row=1, col=2, name="L1")
    figure.update_xaxes(title_text="log10(predicted / true) [dex]", row=1, col=1)
    figure.update_xaxes(title_text="|p - t| / max(e, 0.05 t)", row=1, col=2)
    figure.update_yaxes(title_text="galaxies")
    figure.update_layout(showlegend=False)
    return to_div(figure, div_id)


def importance_bars(pairs: list[tuple[str, float]], top: int = 20, div_id: str = "importance") -> str:
    """Fig. 5: the rise of the validation L1 when a feature is shuffled."""
    pairs = list(pairs)[:top][::-1]
    figure = go.Figure(go.Bar(x=[v for _, v in pairs], y=[n for n, _ in pairs], orientation="h", marker_color="#1a5fb4"))
    figure.update_layout(title=f"Permutation importance (top {len(pairs)})", xaxis_title="increase of validation L1")
    return to_div(figure, div_id, height=max(300, 22 * len(pairs) + 100))


def ml_relations(luminosity, ml, p_features, classes, redshift, div_id: str = "ml-relations") -> str:
    """Fig. 6: (predicted) M/L against luminosity coloured by P(features), by morphology class, and against redshift."""
    titles = ("coloured by P(features)", "by morphology class", "against redshift")
    figure = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    figure.add_scatter(
        x=luminosity,
        y=ml,
        mode="markers",
        row=1,
        col=1,
        name="P(features)",
        marker={
            "color": p_features,
            "colorscale": "RdBu_r",
            "size": 4,
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": "P(features)", "x": 1.02, "len": 0.6, "y": 0.75},
        },
    )
    for name in MORPHOLOGY_CLASSES:
        hit = np.asarray(classes) == name
        if hit.any():
            figure.add_scatter(
                x=np.asarray(luminosity)[hit],
                y=np.asarray(ml)[hit],
                mode="markers",
                name=name,
                row=1,
                col=2,
                marker={"size": 4, "color": COLOURS[name]},
            )
    figure.add_scatter(
        x=redshift, y=ml, mode="markers", row=1, col=3, name="z", marker={"size": 4, "color": "#555"}, showlegend=False
    )
    for col in (1, 2):
        figure.update_xaxes(type="log", title_text=f"L_g [{units.LUMINOSITY}]", row=1, col=col)
    figure.update_xaxes(title_text="redshift", row=1, col=3)
    figure.update_yaxes(type="log", dtick="D2")
    figure.update_yaxes(title_text=f"predicted {ML_AXIS}", row=1, col=1)
    figure.update_layout(legend={"orientation": "h", "y": -0.25})
    return to_div(figure, div_id, height=460)


def training_curves(curves: dict, div_id: str = "curves") -> str:
    """Loss and validation loss per epoch of a CNN's training."""
    figure = go.Figure()
    for key in ("loss", "val_loss"):
        if curves.get(key):
            figure.add_scatter(y=curves[key], x=list(range(1, len(curves[key]) + 1)), mode="lines+markers", name=key)
    figure.update_layout(title="Training curves", xaxis_title="epoch", yaxis_title="loss")
    return to_div(figure, div_id)


def gz2_bars(volunteers: np.ndarray | None, cnn1: np.ndarray | None, div_id: str = "gz2") -> str:
    """Volunteer and CNN1 probabilities of every answer, grouped by the decision tree's tasks."""
    figure = go.Figure()
    labels = [
        [f"T{gz2.TASK_OF_ANSWER[a][1:]}" for a in gz2.ANSWER_IDS],
        [gz2.short_name(a).split(":")[-1] for a in gz2.ANSWER_IDS],
    ]
    for name, values, colour in (("volunteers", volunteers, "#1a5fb4"), ("CNN1", cnn1, "#e66100")):
        if values is not None:
            figure.add_bar(x=labels, y=np.asarray(values, dtype=float), name=name, marker_color=colour)
    figure.update_layout(
        title="Galaxy Zoo 2 answers (unconditional probabilities)", yaxis_title="probability", barmode="group", yaxis_range=[0, 1]
    )
    return to_div(figure, div_id, height=420)


def colour_map(colours: np.ndarray, div_id: str = "colour-map") -> str:
    """A galaxy's g - i map (AB mag) as a heatmap, blank where a band lacks signal."""
    values = np.asarray(colours, dtype=float)
    finite = values[np.isfinite(values)]
    low, high = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.5)).tolist()
    figure = go.Figure(
        go.Heatmap(
            z=np.where(np.isfinite(values), values, None),
            colorscale="RdBu_r",
            zmin=low,
            zmax=max(high, low + 0.1),
            # Under the map, so a phone's narrow screen shows it too.
            colorbar={
                "title": {"text": "g - i [mag]", "side": "top"},
                "orientation": "h",
                "y": -0.08,
                "yanchor": "top",
                "thickness": 14,
            },
            hovertemplate="x %{x} px, y %{y} px: g - i = %{z:.2f} mag<extra></extra>",
        )
    )
    title = f"g - i colour map, {values.shape[0]} px"
    # Row 0 at the top, as in the images beside it; square pixels.
    axis = {"showticklabels": False, "showgrid": False, "zeroline": False}
    figure.update_layout(
        title=title,
        xaxis=axis,
        yaxis={**axis, "scaleanchor": "x", "autorange": "reversed"},
        margin={"l": 20, "r": 20, "t": 60, "b": 90},
    )
    return to_div(figure, div_id, height=460)


def predictions_against_target(
    names, predicted, target, target_error, lo68=None, hi68=None, div_id: str = "galaxy-predictions"
) -> str:
    """Each model's predicted M/L with its 68% interval, beside the target and its 1-sigma error."""
    error_y = None
    if lo68 is not None and all(v is not None for v in [*lo68, *hi68]):
        error_y = {
            "type": "data",
            "symmetric": False,
            "array": [h - p for h, p in zip(hi68, predicted, strict=True)],
            "arrayminus": [p - lo for lo, p in zip(lo68, predicted, strict=True)],
            "color": "#333",
        }
    figure = go.Figure(go.Bar(x=list(names), y=list(predicted), name="predicted", marker_color="#1a5fb4", error_y=error_y))
    if target is not None:
        figure.add_hline(y=target, line_color="red", annotation_text=f"target {target:.3g}")
        if target_error:
            figure.add_hrect(y0=target - target_error, y1=target + target_error, fillcolor="red", opacity=0.12, line_width=0)
    figure.update_layout(title="Predicted M/L per model", yaxis_title=ML_AXIS)
    return to_div(figure, div_id, height=340)


def band_set_bars(rows: list[dict], div_id: str = "band-sets") -> str:
    """Fig. 8: test L1 for each band set, with and without morphology (and, at g, i, with CNN4 on
    the g and i images: gi_images)."""
    figure = go.Figure()
    series = (
        (False, False, "#777", "photometry only"),
        (True, False, "#1a5fb4", "with morphology"),
        (True, True, "#c64600", "with morphology, CNN4 on the g image and g - i map"),
    )
    for morphology, colour_images, colour, label in series:
        chosen = [r for r in rows if bool(r["morphology"]) == morphology and bool(r.get("colour_images")) == colour_images]
        if not chosen:
            continue
        figure.add_bar(x=[r["bands"] for r in chosen], y=[r["l1"] for r in chosen], marker_color=colour, name=label)
    figure.update_layout(title="Test L1 per set of bands", xaxis_title="bands", yaxis_title="L1", barmode="group")
    return to_div(figure, div_id)


def calibration_plot(report: dict, div_id: str = "calibration", title: str = "Interval calibration (test split)") -> str:
    """Nominal against empirical coverage of the 68% and 95% intervals, overall and per class;
    ``title`` says whose intervals and on which galaxies."""
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#999"}, name="ideal")
    levels = [0.68, 0.95]
    figure.add_scatter(
        x=levels,
        y=[report.get(f"coverage_{round(v * 100)}") for v in levels],
        mode="lines+markers",
        name=f"all ({report.get('n')})",
        line={"color": "#000", "width": 3},
    )
    for name, entry in (report.get("by_class") or {}).items():
        if name:
            figure.add_scatter(
                x=levels,
                y=[entry.get(f"coverage_{round(v * 100)}") for v in levels],
                mode="lines+markers",
                name=f"{name} ({entry.get('n')})",
                line={"color": COLOURS.get(name)},
            )
    figure.update_layout(
        title=title,
        xaxis_title="nominal coverage",
        yaxis_title="empirical coverage",
        xaxis_range=[0.5, 1],
        yaxis_range=[0.4, 1.02],
    )
    return to_div(figure, div_id)


def predicted_distributions(ml, mstar, flagged, div_id: str = "predicted-ml") -> str:
    """The catalogue's predicted M/L and stellar masses (the stellar mass function's shape), with the
    galaxies flagged outside the training selection shown apart."""
    ml, mstar, flagged = np.asarray(ml, dtype=float), np.asarray(mstar, dtype=float), np.asarray(flagged, dtype=bool)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("predicted M/L", "stellar mass"), horizontal_spacing=0.1)
    for label, chosen, colour in (("in selection", ~flagged, "#1a5fb4"), ("flagged", flagged, "#c01c28")):
        for col, values in ((1, ml), (2, mstar)):
            values = values[chosen & np.isfinite(values) & (values > 0)]
            if len(values):
                figure.add_histogram(
                    x=np.log10(values),
                    name=f"{label} ({len(values)})",
                    legendgroup=label,
                    showlegend=col == 1,
                    marker_color=colour,
                    opacity=0.65,
                    nbinsx=40,
                    row=1,
                    col=col,
                )
    figure.update_xaxes(title_text=f"log10 predicted {ML_AXIS}", row=1, col=1)
    figure.update_xaxes(title_text=f"log10 M* [{units.STELLAR_MASS}]", row=1, col=2)
    figure.update_yaxes(title_text="galaxies")
    figure.update_layout(barmode="overlay")
    return to_div(figure, div_id)


def predicted_relations(luminosity, ml, g_minus_i, classes, div_id: str = "predicted-relations") -> str:
    """The catalogue's predicted M/L against g luminosity, and against g - i where the galaxies have it, by morphology."""
    luminosity, ml, colour = (np.asarray(v, dtype=float) for v in (luminosity, ml, g_minus_i))
    classes = np.asarray(classes, dtype=object)
    with_colour = bool(np.isfinite(colour).any())
    titles = ("against g luminosity", "against g - i") if with_colour else ("against g luminosity",)
    figure = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.08)
    for name in (*MORPHOLOGY_CLASSES, ""):
        hit = classes == name
        if not hit.any():
            continue
        style = {"size": 4, "color": COLOURS.get(name, "#777")}
        label = name or "no class"
        common = {"mode": "markers", "name": label, "legendgroup": label, "marker": style}
        figure.add_scatter(x=luminosity[hit], y=ml[hit], **common, row=1, col=1)
        if with_colour:
            figure.add_scatter(x=colour[hit], y=ml[hit], **common, showlegend=False, row=1, col=2)
    figure.update_xaxes(type="log", title_text=f"L_g [{units.LUMINOSITY}]", row=1, col=1)
    if with_colour:
        figure.update_xaxes(title_text="g - i [mag]", row=1, col=2)
    figure.update_yaxes(type="log", dtick="D2", title_text=f"predicted {ML_AXIS}", row=1, col=1)
    figure.update_layout(legend={"orientation": "h", "y": -0.25})
    return to_div(figure, div_id, height=440)


def model_share(models, div_id: str = "model-share") -> str:
    """Which named model gives the catalogue's M/L, as a share of the predicted galaxies."""
    names, counts = np.unique(np.asarray(models, dtype=str), return_counts=True)
    order = np.argsort(-counts)
    total = max(int(counts.sum()), 1)
    figure = go.Figure(
        go.Bar(
            x=[names[i] for i in order],
            y=[100.0 * counts[i] / total for i in order],
            text=[f"{counts[i]}" for i in order],
            textposition="outside",
            marker_color="#26a269",
        )
    )
    figure.update_layout(title="Model of each galaxy's M/L", xaxis_title="named model", yaxis_title="galaxies [%]")
    return to_div(figure, div_id, height=340)
