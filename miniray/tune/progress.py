"""The progress table: redrawn in place on a terminal, plain lines otherwise, and an
HTML table updated in place in a Jupyter notebook."""

from __future__ import annotations

import sys
import time

from .search.sample import flatten

__all__ = ["CLIReporter", "JupyterNotebookReporter", "ProgressReporter"]

_HIDDEN = {"done", "trial_id", "pid", "hostname", "node_ip", "timestamp", "date", "config",
           "time_this_iter_s", "time_since_restore", "iterations_since_restore",
           "training_iteration", "time_total_s", "experiment_tag"}


class ProgressReporter:
    """Base class of progress reporters (``report(trials, done)``)."""

    def report(self, trials, done: bool, *sys_info):
        """Show the state of ``trials``."""


class CLIReporter(ProgressReporter):
    """A table of trials with their status, parameters and metrics.

    Args:
        metric_columns: metrics to show (default: the experiment's metric, else every
            numeric metric of the latest results, up to 4).
        parameter_columns: config keys to show (default: the varying ones, up to 5).
        max_progress_rows: at most this many trial rows (running trials first).
        max_report_frequency: seconds between two tables when not on a terminal
            (on a terminal the table is redrawn every second).
        metric: the metric of the "best so far" line.
        mode: ``"min"`` or ``"max"`` for that line.
        print_intermediate_tables: accepted for Ray compatibility.
    """

    def __init__(self, metric_columns=None, parameter_columns=None, max_progress_rows: int = 20,
                 max_report_frequency: float = 5, metric=None, mode=None,
                 print_intermediate_tables=None, stream=None):
        self.metric_columns = list(metric_columns) if metric_columns else None
        self.parameter_columns = list(parameter_columns) if parameter_columns else None
        self.max_rows = max_progress_rows
        self.frequency = max_report_frequency
        self.metric, self.mode = metric, mode
        self.stream = stream
        self._last = 0.0
        self._lines = 0
        self._start = time.time()

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def set_search_properties(self, metric, mode):
        """Take the experiment's metric and mode unless set here."""
        self.metric = self.metric or metric
        self.mode = self.mode or mode

    def should_report(self, trials, done=False) -> bool:
        """Throttle: a redraw per second on a terminal, one per ``frequency`` otherwise."""
        interval = 1.0 if self._isatty() else self.frequency
        return done or time.time() - self._last >= interval

    def _isatty(self):
        try:
            return self._out().isatty()
        except (AttributeError, ValueError):
            return False

    def report(self, trials, done, *sys_info):
        """Print (or redraw) the table."""
        self._last = time.time()
        text = self.render(trials, done)
        out = self._out()
        if self._isatty():
            # Move the cursor up over the previous table and clear to the end of screen.
            prefix = f"\x1b[{self._lines}F\x1b[J" if self._lines else ""
            out.write(prefix + text + "\n")
            self._lines = text.count("\n") + 1
        else:
            out.write(text + "\n\n")
        out.flush()

    def render(self, trials, done=False) -> str:
        """The table as text."""
        summary, header, rows, hidden = self._table(trials, done)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = list(summary)
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.extend("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in rows)
        if hidden:
            lines.append(f"... {hidden} more trials not shown")
        return "\n".join(lines)

    def _table(self, trials, done):
        """(summary lines, column names, rows, trials not shown) of the table."""
        counts: dict = {}
        for t in trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        elapsed = time.time() - self._start
        summary = [f"== Status == {'(done) ' if done else ''}running for {elapsed:.1f} s",
                   "Trials: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                 or "none yet")]
        if self.metric and self.mode and not isinstance(self.metric, (list, tuple)):
            scored = [t for t in trials if t.last_result and
                      isinstance(t.last_result.get(self.metric), (int, float))]
            if scored:
                pick = max if self.mode == "max" else min
                best = pick(scored, key=lambda t: t.last_result[self.metric])
                summary.append(f"Best so far: {best.trial_id} {self.metric}="
                               f"{_fmt(best.last_result[self.metric])} "
                               f"config={_short(best.config)}")
        params = self.parameter_columns or _varying(trials)[:5]
        metrics = self.metric_columns or _metrics(trials, self.metric)[:4]
        order = {"RUNNING": 0, "PENDING": 1, "PAUSED": 1, "ERROR": 2, "TERMINATED": 3}
        shown = sorted(trials, key=lambda t: order.get(t.status, 4))[:self.max_rows]
        header = ["Trial name", "status", *params, "iter", "total time (s)", *metrics]
        rows = []
        for t in shown:
            flat = flatten(t.config)
            r = t.last_result or {}
            rows.append([t.trial_id, t.status, *(_fmt(flat.get(p)) for p in params),
                         _fmt(r.get("training_iteration")), _fmt(r.get("time_total_s")),
                         *(_fmt(r.get(m)) for m in metrics)])
        return summary, header, rows, len(trials) - len(shown)


class JupyterNotebookReporter(CLIReporter):
    """The progress table as HTML in a Jupyter notebook, updated in place.

    Tune uses it by default in a Jupyter kernel (``CLIReporter`` elsewhere).
    Arguments as :class:`CLIReporter`, plus:

    Args:
        overwrite: update one table in place (default), or show a new table at
            each report (every ``max_report_frequency`` seconds).
    """

    def __init__(self, overwrite: bool = True, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.overwrite = overwrite
        self._handle = None

    def should_report(self, trials, done=False) -> bool:
        """A redraw per second when updating in place, one per ``frequency`` otherwise."""
        interval = 1.0 if self.overwrite else self.frequency
        return done or time.time() - self._last >= interval

    def report(self, trials, done, *sys_info):
        """Show the table, or update the one shown."""
        from IPython.display import HTML, display

        self._last = time.time()
        table = HTML(self.render_html(trials, done))
        if self._handle is None or not self.overwrite:
            self._handle = display(table, display_id=True)
        else:
            self._handle.update(table)

    def render_html(self, trials, done=False) -> str:
        """The table as HTML."""
        from html import escape

        summary, header, rows, hidden = self._table(trials, done)
        parts = ['<div class="miniray-tune-progress">']
        parts.extend(f"<div>{escape(line)}</div>" for line in summary)
        parts.append("<table><thead><tr>")
        parts.extend(f"<th>{escape(h)}</th>" for h in header)
        parts.append("</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{escape(str(x))}</td>" for x in row) + "</tr>")
        parts.append("</tbody></table>")
        if hidden:
            parts.append(f"<div>... {hidden} more trials not shown</div>")
        parts.append("</div>")
        return "".join(parts)


def default_reporter() -> CLIReporter:
    """A ``JupyterNotebookReporter`` in a Jupyter kernel, else a ``CLIReporter``."""
    return JupyterNotebookReporter() if in_notebook() else CLIReporter()


def in_notebook() -> bool:
    """True in a Jupyter kernel whose front end can display HTML (IPython's display
    machinery is there); false in a script or terminal IPython."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # a half-imported or stubbed IPython
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(config, limit=80):
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in flatten(config).items())
    return "{" + (text if len(text) <= limit else text[:limit - 3] + "...") + "}"


def _varying(trials):
    configs = [flatten(t.config) for t in trials]
    names = list(dict.fromkeys(k for c in configs for k in c))
    if len(configs) <= 1:
        return names
    return [n for n in names if len({repr(c.get(n)) for c in configs}) > 1]


def _metrics(trials, metric):
    if metric and not isinstance(metric, (list, tuple)):
        return [metric]
    if isinstance(metric, (list, tuple)):
        return list(metric)
    keys = []
    for t in trials:
        for k, v in (t.last_result or {}).items():
            if k not in _HIDDEN and isinstance(v, (int, float)) and k not in keys:
                keys.append(k)
    return keys
