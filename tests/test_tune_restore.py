"""``Tuner.restore``: resume an experiment whose driver was killed, without rerunning the
trials that had finished."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

from miniray import tune

DRIVER = textwrap.dedent("""
    import os, sys, time
    import miniray
    from miniray import tune

    log = sys.argv[2]

    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['i']}\\n")
        time.sleep(0.3 if config["i"] < 2 else 30)  # the later ones never finish here
        return {"score": config["i"]}

    miniray.init(num_cpus=2)
    tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(5)))},
               tune_config=tune.TuneConfig(metric="score", mode="max"),
               run_config=tune.RunConfig(storage_path=sys.argv[1], name="exp",
                                         verbose=0)).fit()
""")


def _terminated(state_file):
    try:
        with open(state_file, "rb") as f:
            state = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        return 0
    return sum(t.status == "TERMINATED" for t in state["trials"])


def test_restore_after_the_driver_was_killed(ray, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    log = tmp_path / "starts.log"
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH",
                                                                               ""))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(log)], env=env)
    state_file = tmp_path / "exp" / "experiment_state.pkl"
    try:
        deadline = time.monotonic() + 60
        while _terminated(state_file) < 2:
            assert proc.poll() is None, "the driver exited early"
            assert time.monotonic() < deadline, "trials never finished"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait()
    started_before = log.read_text().split()
    assert sorted(started_before[:2]) == ["0", "1"]
    assert tune.Tuner.can_restore(str(tmp_path / "exp"))

    # Resume with a trainable that finishes fast; the saved one would sleep 30 s.
    def trainable(config):
        with open(log, "a") as f:
            f.write(f"{config['i']}\n")
        return {"score": config["i"]}

    grid = tune.Tuner.restore(str(tmp_path / "exp"), trainable=trainable).fit()
    assert len(grid) == 5 and grid.num_errors == 0
    assert sorted(r.metrics["score"] for r in grid) == [0, 1, 2, 3, 4]
    starts = log.read_text().split()
    assert starts.count("0") == 1 and starts.count("1") == 1  # finished: not rerun
    assert all(starts.count(str(i)) >= 1 for i in range(2, 5))
    assert grid.get_best_result().config == {"i": 4}
