"""``miniray.util.state.list_jobs`` / ``get_job``: one job per driver, as Ray
lists driver jobs, for an embedded node and for drivers of a head."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import miniray
from miniray.util.state import get_job, list_jobs

from .test_head import head  # noqa: F401  (the fixture)


def test_an_embedded_node_has_one_running_job_its_driver(ray):
    jobs = list_jobs()
    assert len(jobs) == 1
    job = jobs[0]
    assert job.type == "DRIVER" and job.status == "RUNNING" and job.end_time is None
    assert job.job_id == ray.get_runtime_context().get_job_id()
    assert job.driver_info["pid"] == str(os.getpid())
    assert "pytest" in job.entrypoint
    assert get_job(job.job_id) == job
    assert get_job("ffffffff") is None
    assert list_jobs(filters=[("status", "=", "SUCCEEDED")]) == []


def test_drivers_of_a_head_are_jobs_running_then_succeeded(head):  # noqa: F811
    miniray.init(address="auto")
    mine = miniray.get_runtime_context().get_job_id()
    code = textwrap.dedent("""
        import miniray
        miniray.init(address="auto")
        print(miniray.get_runtime_context().get_job_id())
        print(len(miniray.util.state.list_jobs(filters=[("status", "=", "RUNNING")])))
        miniray.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", code, "second-driver"], env=head["env"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    other, running_then = out.stdout.split()
    assert running_then == "2"  # both drivers were connected
    assert other != mine
    jobs = {job.job_id: job for job in list_jobs()}
    assert set(jobs) == {mine, other}  # a head itself runs no driver
    assert jobs[mine].status == "RUNNING" and jobs[mine].driver_info["pid"] == str(os.getpid())
    done = get_job(other)
    assert done.status == "SUCCEEDED" and done.end_time >= done.start_time
    assert "second-driver" in done.entrypoint
    assert list_jobs()[0].job_id == other  # newest first
