"""``ResultGrid.plot``: a PNG of the metric per trial over time and against each parameter."""

from __future__ import annotations

import math

from .search.sample import flatten


def plot_results(trials, path: str, metric: str | None) -> str:
    """Draw the figure with matplotlib's Agg backend (no display needed) and save it."""
    if metric is None:
        raise ValueError("plot() needs a metric (pass metric= or set it in TuneConfig)")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # Only the parameters that vary between trials are worth a panel.
    configs = [flatten(t.config) for t in trials]
    names = sorted({k for c in configs for k in c})
    varying = [n for n in names if len({repr(c.get(n)) for c in configs}) > 1]
    panels = 1 + len(varying)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows))
    ax = fig.add_subplot(rows, cols, 1)
    for trial in trials:
        points = [(r.get("training_iteration", i + 1), r[metric])
                  for i, r in enumerate(trial.results) if metric in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, linewidth=1,
                    markersize=3, label=trial.trial_id)
    ax.set_xlabel("training_iteration")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial")
    if len(trials) <= 10:
        ax.legend(fontsize="x-small")
    finals = [(c, t.last_result.get(metric)) for c, t in zip(configs, trials)
              if t.last_result and isinstance(t.last_result.get(metric), (int, float))]
    for i, name in enumerate(varying):
        ax = fig.add_subplot(rows, cols, i + 2)
        xs, ys = [c.get(name) for c, _ in finals], [v for _, v in finals]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys, s=14)
        else:
            # Categorical axis: one tick per distinct value, in first-seen order.
            labels = list(dict.fromkeys(repr(x) for x in xs))
            ax.scatter([labels.index(repr(x)) for x in xs], ys, s=14)
            ax.set_xticks(range(len(labels)), labels, fontsize="small", rotation=30)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
