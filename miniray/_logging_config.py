"""Ray's ``LoggingConfig``: structured logs from the driver and every worker.

``init(logging_config=LoggingConfig(encoding="JSON"))`` sets up the root
logger of the driver and of each worker process the node starts: records get
the Ray context (``job_id``, ``worker_id``, ``node_id``, and in a task
``task_id``, ``task_name``, ``actor_id``) and are written as Ray writes them,
one JSON object a line or Ray's text format with ``key=value`` pairs. Worker
lines reach the driver's terminal through the usual ``(name pid=N)`` echo.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields

__all__ = ["LoggingConfig"]

# Where the config travels to worker processes (they apply it at start).
ENV = "MINIRAY_LOGGING_CONFIG"

ENCODINGS = ("TEXT", "JSON")
_TEXT_FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"
# Python's own LogRecord attributes: everything else on a record is context.
STANDARD_ATTRS = frozenset({
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName",
    "levelname", "levelno", "lineno", "message", "module", "msecs", "msg", "name",
    "pathname", "process", "processName", "relativeCreated", "stack_info", "thread",
    "threadName", "taskName",
})


@dataclass
class LoggingConfig:
    """Logging of the driver and of every task and actor process of the job.

    Args:
        encoding: ``"TEXT"`` (Ray's line format, context as ``key=value``) or
            ``"JSON"`` (one object a line).
        log_level: level of the root logger and its handler (``"INFO"``).
        additional_log_standard_attrs: more of Python's ``LogRecord``
            attributes to include (``["name", "funcName"]``).
    """

    encoding: str = "TEXT"
    log_level: str = "INFO"
    additional_log_standard_attrs: list = field(default_factory=list)

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"Invalid encoding type: {self.encoding}. "
                             f"Valid encoding types are: {list(ENCODINGS)}")
        if isinstance(self.log_level, str):
            if not isinstance(logging.getLevelName(self.log_level), int):
                raise ValueError(f"Invalid log_level {self.log_level!r}: use one of "
                                 "DEBUG, INFO, WARNING, ERROR, CRITICAL")
        elif not isinstance(self.log_level, int):
            raise ValueError(f"log_level must be a level name or number, got {self.log_level!r}")
        for attr in self.additional_log_standard_attrs:
            if attr not in STANDARD_ATTRS:
                raise ValueError(f"Unknown python logging standard attribute: {attr}. "
                                 f"The valid attributes are: {sorted(STANDARD_ATTRS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LoggingConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def _apply(self) -> None:
        """Set up this process's root logger (the driver's, or a worker's)."""
        formatter = (_JSONFormatter if self.encoding == "JSON" else _TextFormatter)(
            self.additional_log_standard_attrs)
        handler = logging.StreamHandler()
        handler.setLevel(self.log_level)
        handler.setFormatter(formatter)
        handler.addFilter(_ContextFilter())
        root = logging.getLogger()
        # A second init() replaces the handler rather than doubling every line.
        for old in [h for h in root.handlers if getattr(h, "_miniray_logging_config", False)]:
            root.removeHandler(old)
        handler._miniray_logging_config = True
        root.setLevel(self.log_level)
        root.addHandler(handler)


class _ContextFilter(logging.Filter):
    """Adds the Ray context of the process (and of its current task)."""

    def filter(self, record):
        from ._core import context as _context

        client = _context._worker_client
        record.job_id = _job_id
        record.worker_id = f"worker-{os.getpid()}"
        record.node_id = _node_id
        if client is not None:
            if client.current_task is not None:
                record.task_id = client.current_task.hex()
                record.task_name = getattr(client, "current_task_name", "") or None
            if _context.current_actor_id is not None:
                record.actor_id = _context.current_actor_id.hex()
        return True


_job_id = ""
_node_id = ""


class _Formatter(logging.Formatter):
    def __init__(self, additional):
        super().__init__()
        self.additional = list(additional)

    def context(self, record, with_standard: bool) -> dict:
        attrs = {}
        if with_standard:
            attrs.update(asctime=self.formatTime(record), levelname=record.levelname,
                         message=record.getMessage(), filename=record.filename,
                         lineno=record.lineno, process=record.process)
            if record.exc_info:
                if not record.exc_text:
                    record.exc_text = self.formatException(record.exc_info)
                attrs["exc_text"] = record.exc_text
        for key in self.additional:
            attrs[key] = getattr(record, key, None)
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS and value is not None:
                attrs[key] = value
        return attrs


class _JSONFormatter(_Formatter):
    def format(self, record):
        return json.dumps(self.context(record, True), default=str)


class _TextFormatter(_Formatter):
    def __init__(self, additional):
        super().__init__(additional)
        self.inner = logging.Formatter(_TEXT_FORMAT)

    def format(self, record):
        line = self.inner.format(record)
        extra = " ".join(f"{k}={v}" for k, v in self.context(record, False).items())
        return f"{line} {extra}" if extra else line


def setup(config, node_pid: int, job_id: str | None = None) -> dict:
    """Apply ``config`` in this process; return the worker env entries that
    apply it in each worker the node starts."""
    global _job_id, _node_id
    if isinstance(config, dict):
        config = LoggingConfig.from_dict(config)
    if not isinstance(config, LoggingConfig):
        raise TypeError(f"logging_config must be a miniray.LoggingConfig, got {config!r}")
    _job_id = job_id or f"{node_pid:08x}"
    _node_id = f"node-{node_pid}"
    config._apply()
    return {ENV: json.dumps({"config": config.to_dict(), "node_pid": node_pid,
                             "job_id": _job_id})}


def apply_from_env() -> None:
    """In a worker process: apply the driver's config, if it passed one."""
    text = os.environ.get(ENV)
    if not text:
        return
    data = json.loads(text)
    setup(data["config"], data["node_pid"], data["job_id"])
