"""miniray.experimental.tqdm_ray: bars from many workers, drawn by the driver."""

from __future__ import annotations

import io
import re
import time

from miniray.experimental import tqdm_ray


def test_bars_from_tasks_are_drawn_by_the_driver(ray, capsys):
    @ray.remote
    def work(name, n):
        import os

        for _ in tqdm_ray.tqdm(range(n), desc=name, flush_interval_s=0):
            time.sleep(0.01)
        print("plain output still echoed")
        return os.getpid()

    pids = ray.get([work.remote("alpha", 5), work.remote("beta", 3)])
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen += capsys.readouterr().out
        if "alpha: 100%" in seen and "beta: 100%" in seen and seen.count("plain output") == 2:
            break
        time.sleep(0.05)
    assert f"alpha: 100%|####################| 5/5 it [pid={pids[0]}] (done)" in seen
    assert f"beta: 100%|####################| 3/3 it [pid={pids[1]}] (done)" in seen
    assert re.search(r"alpha:  40%\|########-+\| 2/5 it", seen)  # updates on the way
    assert "__ray_tqdm_magic_token__" not in seen  # state lines are not printed raw
    assert seen.count("plain output still echoed") == 2


def test_driver_bar_and_terminal_redraw():
    stream = io.StringIO()
    stream.isatty = lambda: True  # draw as in a terminal: bars redrawn in place
    manager = tqdm_ray._BarManager(stream)
    first = {"__magic_token__": tqdm_ray.RAY_TQDM_MAGIC, "x": 1, "pos": 0, "desc": "a",
             "total": 2, "unit": "it", "ip": "127.0.0.1", "pid": 1, "uuid": "u1",
             "closed": False}
    second = {**first, "uuid": "u2", "pos": 1, "desc": "b"}
    manager.process_state_update(first)
    manager.process_state_update(second)
    manager.print("between")
    text = stream.getvalue()
    assert "\x1b[1F" in text  # the second update moved up over the first bar
    assert text.count("a:  50%") == 3 and "between\n" in text
    manager.process_state_update({**first, "x": 2, "closed": True})
    assert "a: 100%" in stream.getvalue() and ("1", "u1") not in manager.bars

    bar = tqdm_ray.tqdm(total=4, desc="driver", flush_interval_s=0)
    bar.update(4)
    bar.close()
    assert bar.n == 4 and bar.total == 4
