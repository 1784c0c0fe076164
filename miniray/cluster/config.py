"""Cluster configuration: :class:`ClusterConfig`, :class:`Settings`, and the
YAML/TOML file format (see ``docs/cluster.md``)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, fields

from .errors import ClusterConfigError

LOCAL = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class ClusterConfig:
    """One member of the pool of clusters.

    Args:
        name: unique name used in ``f.options(cluster=name)``, the admin API and
            metrics (letters, digits, ``_ . -``).
        address: ``"ray://host:port"`` (Ray Client, from any machine) or
            ``"host:port"`` of the GCS (a Ray driver on a node of that cluster,
            e.g. this machine). The name ``"local"`` is the embedded node.
        dashboard: ``"http://host:port"`` of the Ray dashboard, needed only by
            :func:`miniray.cluster.submit_job`.
        prefer: placement favours preferred clusters when they have room.
        weight: multiplies the cluster's placement score (> 0).
        tags: labels matched by ``f.options(tags=[...])`` (e.g. ``"arm64"``).
        runtime_env: Ray ``runtime_env`` applied to every task and actor sent there.
        max_inflight: most tasks in flight there at once; more wait in the
            queue. ``None``: four times the cluster's CPUs (at least 4), as last polled.
        auth_token / auth_token_path: Ray token authentication for this
            cluster (see docs); default: ``RAY_AUTH_TOKEN`` /
            ``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token``, as Ray does.
    """

    name: str
    address: str | None = None
    dashboard: str | None = None
    prefer: bool = False
    weight: float = 1.0
    tags: list = field(default_factory=list)
    runtime_env: dict | None = None
    max_inflight: int | None = None
    auth_token: str | None = field(default=None, repr=False)
    auth_token_path: str | None = None

    def __post_init__(self):
        what = f"ClusterConfig {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ClusterConfigError(
                f"cluster name {self.name!r} is invalid: use 1-63 letters, digits, '_', '.' "
                "or '-', starting with a letter or digit")
        if self.name == LOCAL:
            if self.address not in (None, LOCAL):
                raise ClusterConfigError(
                    f"{what}: the name 'local' is the embedded node and takes no address; "
                    "give the Ray cluster another name")
        elif not isinstance(self.address, str) or not self.address:
            raise ClusterConfigError(
                f"{what}: address is required, e.g. 'ray://head:10001' or '127.0.0.1:6379'")
        elif not self.address.startswith("ray://") and not re.match(r"^[^:/]+:\d+$",
                                                                     self.address):
            raise ClusterConfigError(
                f"{what}: address {self.address!r} must be 'ray://host:port' or 'host:port'")
        if self.dashboard is not None and not re.match(r"^https?://", str(self.dashboard)):
            raise ClusterConfigError(
                f"{what}: dashboard {self.dashboard!r} must be an http(s):// URL, "
                "e.g. 'http://127.0.0.1:8265'")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) \
                or not math.isfinite(self.weight) or self.weight <= 0:
            raise ClusterConfigError(f"{what}: weight must be a number > 0, got {self.weight!r}")
        self.weight = float(self.weight)
        if isinstance(self.tags, str):
            raise ClusterConfigError(f"{what}: tags must be a list of strings, e.g. "
                                     f"[{self.tags!r}], not a string")
        if not all(isinstance(t, str) and t for t in self.tags):
            raise ClusterConfigError(f"{what}: tags must be non-empty strings, got {self.tags!r}")
        self.tags = list(self.tags)
        if not isinstance(self.prefer, bool):
            raise ClusterConfigError(f"{what}: prefer must be true or false")
        if self.max_inflight is not None and (isinstance(self.max_inflight, bool)
                                              or not isinstance(self.max_inflight, int)
                                              or self.max_inflight < 1):
            raise ClusterConfigError(
                f"{what}: max_inflight must be an int >= 1 or None, got {self.max_inflight!r}")
        if self.runtime_env is not None and not isinstance(self.runtime_env, dict):
            raise ClusterConfigError(f"{what}: runtime_env must be a mapping")
        if self.auth_token is not None and self.auth_token_path is not None:
            raise ClusterConfigError(f"{what}: give auth_token or auth_token_path, not both")
        if self.auth_token_path is not None:
            self.auth_token_path = os.path.expanduser(self.auth_token_path)

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    def public_dict(self) -> dict:
        """The config without secrets, for the admin API."""
        data = asdict(self)
        data["auth_token"] = "***" if self.auth_token else None
        return data


@dataclass
class Settings:
    """Control-plane knobs (the ``settings:`` section of the config file).

    Args:
        queue_size: most submissions waiting for a cluster; past it
            ``remote()`` waits (``block_when_full``) or raises ``QueueFullError``.
        block_when_full: wait for room instead of raising.
        health_interval: seconds between health polls of each cluster.
        probe_timeout: a health poll slower than this counts as a failure.
        breaker_failures: consecutive failures that open a cluster's breaker.
        breaker_reset: seconds an open breaker waits before a half-open probe.
        max_attempts: tries per submission across clusters for cluster-level
            failures (application errors are Ray's ``max_retries`` /
            ``retry_exceptions``).
        backoff_base / backoff_cap: exponential backoff with full jitter
            between those tries, in seconds.
        connect_timeout: seconds to wait for a cluster's driver to connect.
    """

    queue_size: int = 10000
    block_when_full: bool = True
    health_interval: float = 2.0
    probe_timeout: float = 5.0
    breaker_failures: int = 3
    breaker_reset: float = 5.0
    max_attempts: int = 5
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    connect_timeout: float = 60.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" or isinstance(f.default, bool):
                if not isinstance(value, bool):
                    raise ClusterConfigError(f"settings.{f.name} must be true or false")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ClusterConfigError(
                    f"settings.{f.name} must be a number > 0, got {value!r}")
        for name in ("queue_size", "breaker_failures", "max_attempts"):
            if not isinstance(getattr(self, name), int):
                raise ClusterConfigError(f"settings.{name} must be an int")


def load_config(path: str) -> tuple[list[ClusterConfig], Settings]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) cluster file.

    Returns the members (the ``local:`` section, when present and enabled,
    becomes the member named ``"local"``) and the settings.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ClusterConfigError(f"cluster config file {path!r} does not exist")
    lower = path.lower()
    if lower.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml ships with the cluster extra
            raise ClusterConfigError(
                "reading YAML needs pyyaml: pip install 'miniray[cluster]'") from None
        with open(path) as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as exc:
                raise ClusterConfigError(f"{path}: invalid YAML: {exc}") from None
    elif lower.endswith(".toml"):
        import tomllib

        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ClusterConfigError(f"{path}: invalid TOML: {exc}") from None
    else:
        raise ClusterConfigError(
            f"{path}: unknown config format; name the file *.yaml, *.yml or *.toml")
    return parse_config(data, path)


def parse_config(data, source: str = "config") -> tuple[list[ClusterConfig], Settings]:
    """Validate the already-parsed content of a config file."""
    if not isinstance(data, dict):
        raise ClusterConfigError(f"{source}: the top level must be a mapping with a "
                                 "'clusters' list")
    unknown = set(data) - {"clusters", "local", "settings"}
    if unknown:
        raise ClusterConfigError(f"{source}: unknown top-level keys {sorted(unknown)}; "
                                 "expected 'clusters', 'local', 'settings'")
    clusters = data.get("clusters") or []
    if not isinstance(clusters, list):
        raise ClusterConfigError(f"{source}: 'clusters' must be a list of mappings")
    members = []
    local = data.get("local", {})
    if local is not None and local is not False:
        if not isinstance(local, dict):
            raise ClusterConfigError(f"{source}: 'local' must be a mapping or false")
        local = dict(local)
        if local.pop("enabled", True):
            members.append(_member(dict(local, name=LOCAL), f"{source}: local"))
    for i, entry in enumerate(clusters):
        if not isinstance(entry, dict):
            raise ClusterConfigError(f"{source}: clusters[{i}] must be a mapping")
        members.append(_member(entry, f"{source}: clusters[{i}]"))
    check_unique(members)
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ClusterConfigError(f"{source}: 'settings' must be a mapping")
    known = {f.name for f in fields(Settings)}
    bad = set(settings) - known
    if bad:
        raise ClusterConfigError(f"{source}: unknown settings {sorted(bad)}; "
                                 f"known: {sorted(known)}")
    return members, Settings(**settings)


def _member(entry: dict, where: str) -> ClusterConfig:
    known = {f.name for f in fields(ClusterConfig)}
    bad = set(entry) - known
    if bad:
        raise ClusterConfigError(f"{where}: unknown keys {sorted(bad)}; known: {sorted(known)}")
    if "name" not in entry:
        raise ClusterConfigError(f"{where}: 'name' is required")
    return ClusterConfig(**entry)


def check_unique(members) -> None:
    seen = set()
    for member in members:
        if member.name in seen:
            raise ClusterConfigError(f"cluster name {member.name!r} is used twice")
        seen.add(member.name)
