"""Helpers users import from ``ray.tune.utils``: config dict utilities, checks of a
trainable (serialization, save/restore) and waiting for a GPU to be free."""

from __future__ import annotations

import copy
import datetime
import inspect
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

__all__ = ["UtilMonitor", "date_str", "deep_update", "diagnose_serialization", "flatten_dict",
           "merge_dicts", "unflattened_lookup", "validate_save_restore", "wait_for_gpu",
           "warn_if_slow"]

logger = logging.getLogger("miniray.tune")


def date_str() -> str:
    """The current local time as ``YYYY-mm-dd_HH-MM-SS`` (Tune's directory names)."""
    return datetime.datetime.today().strftime("%Y-%m-%d_%H-%M-%S")


def deep_update(original: dict, new_dict: dict, new_keys_allowed: bool = False,
                allow_new_subkey_list=None, override_all_if_type_changes=None,
                override_all_key_list=None) -> dict:
    """Update ``original`` in place with ``new_dict``, recursing into nested dicts.

    A key of ``new_dict`` missing from ``original`` raises unless ``new_keys_allowed``
    (top-level keys in ``allow_new_subkey_list`` accept new sub-keys). A top-level key
    in ``override_all_key_list`` is replaced whole; one in
    ``override_all_if_type_changes`` is replaced whole when its ``"type"`` changes.
    Returns ``original``.
    """
    allow_new = set(allow_new_subkey_list or ())
    on_type_change = set(override_all_if_type_changes or ())
    replace_whole = set(override_all_key_list or ())
    for key, value in new_dict.items():
        if key not in original and not new_keys_allowed:
            raise Exception(f"Unknown config parameter `{key}` ")
        old = original.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and key not in replace_whole:
            if key in on_type_change and "type" in value and "type" in old \
                    and value["type"] != old["type"]:
                original[key] = value
            else:
                deep_update(old, value, True if key in allow_new else new_keys_allowed,
                            override_all_key_list=replace_whole)
        else:
            original[key] = value
    return original


def merge_dicts(d1: dict, d2: dict) -> dict:
    """A new dict: a deep copy of ``d1`` deep-updated with ``d2`` (new keys allowed)."""
    merged = copy.deepcopy(d1)
    deep_update(merged, d2, True, [])
    return merged


def flatten_dict(dt: dict, delimiter: str = "/", prevent_delimiter: bool = False,
                 flatten_list: bool = False) -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (a new dict of the same type).

    ``prevent_delimiter`` raises ``ValueError`` when a key contains the delimiter;
    ``flatten_list`` also flattens lists (``"a/0"``).
    """
    def check(key):
        if prevent_delimiter and delimiter in str(key):
            raise ValueError(f"Found delimiter `{delimiter}` in key when trying to flatten "
                             "array. Please avoid using the delimiter in your specification.")

    out = copy.copy(dt)
    out.clear()  # same mapping type as the input

    def walk(prefix, value):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, sub in items:
            if isinstance(value, dict):
                check(key)
            name = f"{prefix}{delimiter}{key}" if prefix is not None else key
            if isinstance(sub, dict) or (flatten_list and isinstance(sub, list)):
                walk(str(name), sub)  # an empty one disappears, as in Ray
            else:
                out[name] = sub

    walk(None, dt)
    return out


def unflattened_lookup(flat_key: str, lookup, delimiter: str = "/", **kwargs):
    """``lookup["a"][0]["b"]`` for ``flat_key="a/0/b"`` (a key present as is wins).

    With ``default=...`` a missing key returns it instead of raising ``KeyError``.
    """
    if isinstance(lookup, Mapping) and flat_key in lookup:
        return lookup[flat_key]
    base = lookup
    for key in flat_key.split(delimiter):
        try:
            if isinstance(base, Mapping):
                base = base[key]
            elif isinstance(base, Sequence) and not isinstance(base, str):
                base = base[int(key)]
            else:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError):
            if "default" in kwargs:
                return kwargs["default"]
            raise KeyError(flat_key) from None
    return base


class warn_if_slow:
    """Context manager that logs a warning when its block takes longer than
    ``threshold`` seconds (default 0.5, or ``TUNE_WARN_THRESHOLD_S``)."""

    DEFAULT_THRESHOLD = float(os.environ.get("TUNE_WARN_THRESHOLD_S", 0.5))
    DEFAULT_MESSAGE = ("The `{name}` operation took {duration:.3f} s, which may be a "
                       "performance bottleneck.")

    def __init__(self, name: str, threshold: float | None = None, message: str | None = None,
                 disable: bool = False):
        self.name = name
        self.threshold = threshold or self.DEFAULT_THRESHOLD
        self.message = message or self.DEFAULT_MESSAGE
        self.disable = disable
        self.too_slow = False

    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        duration = time.monotonic() - self.start
        if duration > self.threshold and not self.disable:
            self.too_slow = True
            logger.warning(self.message.format(name=self.name, duration=duration))
        return False


def diagnose_serialization(trainable):
    """Find out why a trainable cannot be sent to workers.

    Returns ``True`` if it serializes; otherwise prints each global and nonlocal
    variable it captures with PASSED/FAILED and returns the set of names of those
    that do not serialize (move them inside the function, or pass them with
    ``tune.with_parameters``).
    """
    import cloudpickle

    print(f"Trying to serialize {trainable}...")
    try:
        cloudpickle.dumps(trainable)
        print("Serialization succeeded!")
        return True
    except Exception as exc:
        print(f"Serialization failed: {exc}")
    target = trainable
    params = getattr(trainable, "__tune_parameters__", None)
    if params is not None and not inspect.isclass(trainable):
        target = inspect.getclosurevars(trainable).nonlocals.get("trainable", trainable)
    print(f"Inspecting the scope of the trainable by running "
          f"`inspect.getclosurevars({target})`...")
    closure = inspect.getclosurevars(target)
    failures: set = set()
    for kind, variables in (("global", closure.globals), ("nonlocal", closure.nonlocals)):
        if not variables:
            continue
        print(f"Detected {len(variables)} {kind} variables. Checking serializability...")
        for name, value in variables.items():
            try:
                cloudpickle.dumps(value)
                print(f"   {value}[name='{name}']... PASSED")
            except Exception as exc:
                failures.add(name)
                print(f"   {value}[name='{name}']... FAILED")
                print(f"   {type(exc).__name__}: {exc}")
    if failures:
        print(f"Variable(s) {failures} was found to be non-serializable. Consider either "
              "removing the instantiation/imports of these objects or moving them into the "
              "scope of the trainable.")
    else:
        print("Nothing was found to have failed the diagnostic test, though serialization "
              "did not succeed.")
    return failures


def validate_save_restore(trainable_cls, config: dict | None = None, num_gpus: int = 0):
    """Check that a class trainable resumes correctly from its checkpoint.

    Runs three iterations in one actor, saves, restores into a second actor
    (another process) and checks that it continues at iteration 4 and 5.
    Returns ``True``; raises ``AssertionError`` naming what went wrong.
    """
    from .. import api
    from .trainable import is_class_trainable

    if not is_class_trainable(trainable_cls):
        raise TypeError("validate_save_restore() needs a tune.Trainable subclass, got "
                        f"{trainable_cls!r}")
    api._auto_init()
    remote_cls = api.remote(num_cpus=0, num_gpus=num_gpus)(trainable_cls)
    first = remote_cls.remote(config=config or {})
    second = remote_cls.remote(config=config or {})
    try:
        for _ in range(3):
            result = api._get_blocking(first.train.remote())
        assert result.get("training_iteration") == 3, \
            "validate_save_restore needs train() to count training_iteration"
        checkpoint = api._get_blocking(first.save.remote())
        api._get_blocking(second.restore.remote(checkpoint))
        result = api._get_blocking(second.train.remote())
        assert result["training_iteration"] == 4, \
            f"the restored trainable continued at iteration {result['training_iteration']}, " \
            "not 4: restore() did not bring back the saved state"
        result = api._get_blocking(second.train.remote())
        assert result["training_iteration"] == 5
        shutil.rmtree(checkpoint.path, ignore_errors=True)
    finally:
        api.kill(first)
        api.kill(second)
    return True


class UtilMonitor(threading.Thread):
    """Samples system usage every ``delay`` seconds on a daemon thread, as Ray's
    ``UtilMonitor``: CPU and RAM percent (psutil) and, where NVML (``pynvml``) can read
    them, each GPU's load and memory use (fractions). :meth:`get_data` returns the means
    since the last call as ``{"perf": {"cpu_util_percent": ..., "ram_util_percent": ...,
    "gpu_util_percent0": ..., "vram_util_percent0": ...}}``.

    A trial whose config has ``"log_sys_usage": True`` adds it to every result.
    Without psutil and NVML it logs a warning and ``get_data()`` returns ``{}``.
    """

    def __init__(self, start: bool = True, delay: float = 0.7):
        super().__init__(name="miniray-util-monitor", daemon=True)
        self.stopped = True
        self.delay = delay
        self.values: dict = {}
        self.lock = threading.Lock()
        try:
            import psutil
        except ImportError:
            psutil = None
        self._psutil = psutil
        self._nvml = self._nvml_handles()
        if psutil is None and not self._nvml:
            if start:
                logger.warning("UtilMonitor: install psutil (and nvidia-ml-py for GPUs) to "
                               "monitor system usage")
            return
        if psutil is not None:
            psutil.cpu_percent(interval=None)  # the first call only sets the baseline
        if start:
            self.start()

    @staticmethod
    def _nvml_handles() -> list:
        try:
            import pynvml

            pynvml.nvmlInit()
            return [(i, pynvml.nvmlDeviceGetHandleByIndex(i))
                    for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no pynvml, no driver, no GPU
            return []

    def _read_utilization(self):
        samples = {}
        if self._psutil is not None:
            samples["cpu_util_percent"] = float(self._psutil.cpu_percent(interval=None))
            samples["ram_util_percent"] = float(self._psutil.virtual_memory().percent)
        if self._nvml:
            import pynvml

            for index, handle in self._nvml:
                rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                samples[f"gpu_util_percent{index}"] = rates.gpu / 100.0
                samples[f"vram_util_percent{index}"] = memory.used / memory.total
        with self.lock:
            for key, value in samples.items():
                self.values.setdefault(key, []).append(value)

    def get_data(self) -> dict:
        """Means of the samples since the last call (``{}`` if the monitor is stopped)."""
        if self.stopped:
            return {}
        with self.lock:
            values, self.values = self.values, {}
        return {"perf": {k: sum(v) / len(v) for k, v in values.items() if v}}

    def run(self):
        self.stopped = False
        while not self.stopped:
            self._read_utilization()
            time.sleep(self.delay)

    def stop(self):
        """End the sampling thread (within ``delay`` seconds)."""
        self.stopped = True


def _gpu_memory_utilization(gpu_id) -> float:
    """Used / total memory of one GPU (by index or UUID): NVML, then GPUtil, then
    nvidia-smi."""
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        pynvml.nvmlInit()
        try:
            if isinstance(gpu_id, str) and not gpu_id.isdigit():
                handle = pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            return info.used / info.total
        finally:
            pynvml.nvmlShutdown()
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise RuntimeError("wait_for_gpu cannot read GPU memory: install nvidia-ml-py "
                           "(pip install nvidia-ml-py) or put nvidia-smi on PATH")
    out = subprocess.run([smi, "--query-gpu=index,uuid,memory.used,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    for line in out.strip().splitlines():
        index, uuid, used, total = [p.strip() for p in line.split(",")]
        if str(gpu_id) in (index, uuid):
            return float(used) / float(total)
    raise RuntimeError(f"wait_for_gpu: GPU {gpu_id!r} not found by nvidia-smi")


def wait_for_gpu(gpu_id=None, target_util: float = 0.01, retry: int = 20,
                 delay_s: float = 5, gpu_memory_limit: float | None = None) -> bool:
    """Block until the trial's GPU has freed its memory (a previous trial's process may
    still hold it); call it at the start of a GPU trainable.

    Args:
        gpu_id: GPU index or UUID; default: the first of ``miniray.get_gpu_ids()``.
        target_util: unblock once used/total memory is at most this.
        retry: how many checks; ``delay_s`` apart.
        gpu_memory_limit: deprecated, unused (as in Ray).

    Returns True. Raises ``RuntimeError`` when the trial has no GPU (on a CPU-only
    trial there is nothing to wait for: give it ``{"gpu": 1}`` with
    ``tune.with_resources`` or drop the call), when GPU memory cannot be read, or when
    it was not freed after ``retry`` checks.
    """
    from .. import api

    if gpu_id is None:
        ids = api.get_gpu_ids()
        if not ids:
            raise RuntimeError("No GPU ids found from miniray.get_gpu_ids(). Did you set Tune "
                               "resources correctly? (tune.with_resources(fn, {'gpu': 1})); "
                               "a trial without a GPU has nothing to wait for.")
        gpu_id = ids[0]
    for attempt in range(retry):
        used = _gpu_memory_utilization(gpu_id)
        if used <= target_util:
            return True
        if attempt < retry - 1:
            logger.info("Waiting for GPU %s memory to free (%.1f%% used)", gpu_id, used * 100)
            time.sleep(delay_s)
    raise RuntimeError(f"GPU {gpu_id} memory was not freed ({used:.1%} used after {retry} "
                       f"checks {delay_s} s apart).")
