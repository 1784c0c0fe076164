"""``init(logging_config=LoggingConfig(...))``: the driver's and the workers'
records carry Ray's context, as JSON or Ray's text lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import miniray


def _run_driver(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(miniray.__file__)))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=90)


_PROGRAM = """
    import logging, os
    import miniray as ray

    ray.init(num_cpus=1, include_dashboard=False,
             logging_config=ray.LoggingConfig(encoding={encoding!r}, log_level="INFO",
                                              additional_log_standard_attrs=["name"]))
    logging.getLogger("driver.side").info("hello from the driver")

    @ray.remote
    def f():
        logging.getLogger("task.side").info("hello from a task")
        logging.getLogger("task.side").debug("not shown: below INFO")
        return os.getpid(), ray.get_runtime_context().get_task_id()

    pid, task_id = ray.get(f.remote())
    print("RESULT", pid, task_id, ray.get_runtime_context().get_job_id(), flush=True)
    ray.shutdown()
"""


def test_json_logging_config_structures_driver_and_worker_records():
    result = _run_driver(_PROGRAM.format(encoding="JSON"))
    assert result.returncode == 0, result.stderr[-3000:]
    pid, task_id, job_id = result.stdout.split("RESULT")[1].split()
    records = []
    for line in result.stderr.splitlines():
        start = line.find("{")  # worker lines come with a "(f pid=N)" prefix
        if start >= 0:
            try:
                records.append(json.loads(line[start:]))
            except ValueError:
                pass
    driver = [r for r in records if r.get("message") == "hello from the driver"]
    task = [r for r in records if r.get("message") == "hello from a task"]
    assert len(driver) == 1 and len(task) == 1, result.stderr[-3000:]
    assert driver[0]["job_id"] == job_id and driver[0]["name"] == "driver.side"
    assert "task_id" not in driver[0] and driver[0]["levelname"] == "INFO"
    assert task[0]["task_id"] == task_id and task[0]["job_id"] == job_id
    assert task[0]["task_name"] and task[0]["process"] == int(pid)
    assert task[0]["worker_id"] == f"worker-{pid}" and task[0]["name"] == "task.side"
    assert "not shown" not in result.stderr


def test_text_logging_config_writes_rays_line_format():
    result = _run_driver(_PROGRAM.format(encoding="TEXT"))
    assert result.returncode == 0, result.stderr[-3000:]
    pid, task_id, job_id = result.stdout.split("RESULT")[1].split()
    task_line = next(line for line in result.stderr.splitlines() if "hello from a task" in line)
    assert "\tINFO <string>:" in task_line and " -- hello from a task" in task_line
    assert f"task_id={task_id}" in task_line and f"job_id={job_id}" in task_line
    assert "name=task.side" in task_line
    driver_line = next(line for line in result.stderr.splitlines()
                       if "hello from the driver" in line)
    assert f"job_id={job_id}" in driver_line and "task_id=" not in driver_line


def test_logging_config_rejects_bad_values_naming_the_choices():
    with pytest.raises(ValueError, match="Valid encoding types are"):
        miniray.LoggingConfig(encoding="XML")
    with pytest.raises(ValueError, match="Unknown python logging standard attribute"):
        miniray.LoggingConfig(additional_log_standard_attrs=["nope"])
    with pytest.raises(ValueError, match="Invalid log_level"):
        miniray.LoggingConfig(log_level="LOUD")
    config = miniray.LoggingConfig.from_dict({"encoding": "JSON", "other": 1})
    assert config.to_dict() == {"encoding": "JSON", "log_level": "INFO",
                                "additional_log_standard_attrs": []}
