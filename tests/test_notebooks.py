"""Ray's notebook code in a real Jupyter kernel (nbclient + ipykernel) and in plain IPython.

In a kernel every cell, synchronous or not, runs inside the kernel's running
event loop; in plain IPython only the cells that ``await`` do. The same cells run
in both, and each cell's output is checked: values where Ray gives values, the
``await`` forms where the cell awaits, Tune, ActorPool and Pool, and a clean
shutdown that leaves no kernel, worker or shared memory behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from miniray._core.store import shm

from .conftest import iter_processes

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (source, what the cell prints, the repr of its value). Printed text is
# matched as a substring of the cell's stdout; the value exactly.
CELLS = [
    ("import asyncio, os, time\n"
     "import miniray as ray\n"
     "ray.init(num_cpus=2, include_dashboard=False)\n"
     "from miniray import api\n"
     "print('pid', os.getpid(), 'node on its own thread:', api._runtime.owns_loop)",
     "node on its own thread: True", None),
    ("@ray.remote\n"
     "def f(x):\n"
     "    return x * x",
     "", None),
    ("ray.get(f.remote(2))", "", "4"),
    ("x = ray.get([f.remote(i) for i in range(4)])\nprint(x)", "[0, 1, 4, 9]", None),
    ("refs = [f.remote(i) for i in range(4)]\n"
     "ready, not_ready = ray.wait(refs, num_returns=2)\n"
     "print(len(ready), len(not_ready))",
     "2 2", None),
    ("def total(n):\n"
     "    return sum(ray.get([f.remote(i) for i in range(n)]))\n"
     "total(4)",
     "", "14"),
    ("from concurrent.futures import ThreadPoolExecutor\n"
     "ref = f.remote(6)\n"
     "t0 = time.monotonic()\n"
     "with ThreadPoolExecutor(1) as pool:\n"
     "    print(pool.submit(ray.get, ref, timeout=10).result(), time.monotonic() - t0 < 5)",
     "36 True", None),
    # A task starts while the cell runs, not when it ends.
    ("@ray.remote\n"
     "def started_at():\n"
     "    import time\n"
     "    return time.time()\n"
     "r = started_at.remote()\n"
     "time.sleep(3)\n"
     "slept = time.time()\n"
     "print('started during the cell:', ray.get(r) < slept)",
     "started during the cell: True", None),
    ("await f.remote(3)", "", "9"),
    ("await ray.get(f.remote(3))", "", "9"),
    ("ready, pending = await ray.wait([f.remote(1), f.remote(2)], num_returns=2)\n"
     "print(len(ready), len(pending))",
     "2 0", None),
    ("await asyncio.gather(*[f.remote(i) for i in range(3)])", "", "[0, 1, 4]"),
    # One statement with a plain get and an awaited one: each gets what it asked for.
    ("for i in (2, 3):\n"
     "    print(ray.get(f.remote(i)), await ray.get(f.remote(i)))",
     "4 4\n9 9", None),
    ("async def service(n):\n"
     "    return await ray.get(f.remote(n))\n"
     "await service(7)",
     "", "49"),
    ("from miniray import tune\n"
     "def trainable(config):\n"
     "    tune.report({'score': config['x'] * 2})\n"
     "results = tune.Tuner(\n"
     "    trainable, param_space={'x': tune.grid_search([1, 2, 3])},\n"
     "    tune_config=tune.TuneConfig(metric='score', mode='max'),\n"
     "    run_config=tune.RunConfig(storage_path=STORAGE, name='nb')).fit()\n"
     "print('best', results.get_best_result().config, len(results))",
     "best {'x': 3} 3", None),
    ("from miniray.util import ActorPool\n"
     "@ray.remote\n"
     "class Doubler:\n"
     "    def double(self, v):\n"
     "        return 2 * v\n"
     "actor_pool = ActorPool([Doubler.remote(), Doubler.remote()])\n"
     "print(list(actor_pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4])))",
     "[2, 4, 6, 8]", None),
    ("from miniray.util.multiprocessing import Pool\n"
     "def square(v):\n"
     "    return v * v\n"
     "with Pool(2) as p:\n"
     "    print(p.map(square, range(5)))",
     "[0, 1, 4, 9, 16]", None),
    ("from miniray.util.queue import Queue\n"
     "q = Queue()\n"
     "q.put(5)\n"
     "print('queue', q.get(timeout=10), q.qsize())",
     "queue 5 0", None),
    ("ray.shutdown()\nprint('down', ray.is_initialized())", "down False", None),
]


def _no_leftovers(pid: int) -> None:
    """The process ``pid`` is gone with every worker/watchdog it started and its shm."""
    marker = f" {pid} ".encode()
    deadline = time.monotonic() + 15
    while True:
        alive = os.path.exists(f"/proc/{pid}")
        children = [p for p, cmd, _ in iter_processes()
                    if b"miniray._core" in cmd and marker in cmd + b" "]
        segments = shm.list_segments(pid)
        if not (alive or children or segments):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: process alive={alive}, "
                                 f"children={children}, segments={segments}")
        time.sleep(0.1)


def _mismatches(results) -> list[str]:
    """Compare (stdout, value, error) per cell with CELLS; a readable list of differences."""
    bad = []
    for (source, printed, value), (out, got, error) in zip(CELLS, results):
        first = source.splitlines()[-1]
        if error:
            bad.append(f"cell `{first}` raised: {error}")
        elif printed not in out:
            bad.append(f"cell `{first}` printed {out!r}, expected {printed!r}")
        elif value is not None and got != value:
            bad.append(f"cell `{first}` gave {got!r}, expected {value!r}")
    return bad


def _pid(stdout: str) -> int:
    return int(stdout.split("pid", 1)[1].split()[0])


@pytest.mark.timeout(240)  # a kernel start, 3 s of sleep, a Tune run, on a shared host
def test_ray_notebook_cells_in_a_jupyter_kernel(tmp_path):
    from nbclient import NotebookClient

    setup = nbformat.v4.new_code_cell(f"STORAGE = {str(tmp_path / 'tune')!r}")
    nb = nbformat.v4.new_notebook(
        cells=[setup] + [nbformat.v4.new_code_cell(src) for src, _, _ in CELLS],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}})
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("MPLBACKEND", None)
    client = NotebookClient(nb, timeout=90, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)
    results = []
    html_tables = []
    for cell in nb.cells[1:]:
        out, value, error = "", None, None
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                out += output.text
            elif output.output_type == "execute_result":
                value = output.data["text/plain"]
            elif output.output_type == "error":
                error = f"{output.ename}: {output.evalue}"
            elif output.output_type == "display_data" and "text/html" in output.data:
                html_tables.append(output.data["text/html"])
        results.append((out, value, error))
    pid = _pid(results[0][0])
    assert not _mismatches(results), "\n".join(_mismatches(results))
    # Tune's progress is one HTML table, updated in place to its final state.
    assert len(html_tables) == 1, html_tables
    table = html_tables[0]
    assert "<table" in table and table.count("TERMINATED") >= 3, table
    _no_leftovers(pid)


_IPYTHON_RUNNER = textwrap.dedent("""
    import contextlib, io, json, sys
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    cells = json.load(sys.stdin)
    results = []
    for source in cells:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            result = shell.run_cell(source, store_history=True)
        error = result.error_in_exec or result.error_before_exec
        value = None if result.result is None else repr(result.result)
        lines = [l for l in buffer.getvalue().splitlines() if not l.startswith("Out[")]
        results.append(["\\n".join(lines), value,
                        None if error is None else f"{type(error).__name__}: {error}"])
    print("RESULTS" + json.dumps(results))
""")


@pytest.mark.timeout(240)
def test_ray_notebook_cells_in_plain_ipython(tmp_path):
    """Plain IPython (no kernel): sync cells run without a loop, awaiting cells on
    IPython's own loop, which only runs while such a cell runs."""
    cells = [f"STORAGE = {str(tmp_path / 'tune')!r}"] + [src for src, _, _ in CELLS]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _IPYTHON_RUNNER], input=json.dumps(cells),
                          capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    assert "RESULTS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS", 1)[1])[1:]
    assert not _mismatches(results), "\n".join(_mismatches(results))
    _no_leftovers(_pid(results[0][0]))


def test_tune_progress_is_html_in_a_kernel_and_text_elsewhere():
    from miniray.tune.progress import CLIReporter, JupyterNotebookReporter, default_reporter

    class Trial:
        def __init__(self, trial_id, status, x, score):
            self.trial_id, self.status, self.config = trial_id, status, {"x": x}
            self.last_result = {"score": score, "training_iteration": 1, "time_total_s": 0.5}

    trials = [Trial("t0", "TERMINATED", "<a&b>", 1.0), Trial("t1", "RUNNING", "y", 2.0)]
    reporter = JupyterNotebookReporter(metric="score", mode="max")
    html = reporter.render_html(trials)
    assert html.count("<tr>") == 3 and "&lt;a&amp;b&gt;" in html  # header + 2 rows, escaped
    assert "Best so far: t1 score=2" in html
    text = CLIReporter(metric="score", mode="max").render(trials)
    assert "Best so far: t1 score=2" in text and "<a&b>" in text
    # Not in a kernel: a script here, and terminal IPython in the subprocess below.
    assert type(default_reporter()) is CLIReporter
    probe = ("from IPython.core.interactiveshell import InteractiveShell\n"
             "InteractiveShell.instance()\n"
             "from miniray.tune.progress import default_reporter\n"
             "print(type(default_reporter()).__name__)")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.stdout.strip() == "CLIReporter", out.stderr
