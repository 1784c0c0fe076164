"""The Ray driver process of one cluster: ``python -m miniray.cluster._ray_driver FD``.

One process per cluster, because a Ray driver connects to one cluster per
process (Ray Client's multi-connect is experimental and slower; see
docs/cluster.md) and because Ray's token and address settings are
process-wide. It reads requests from the socket ``FD``, submits them with
Ray's own API, and writes each result back when Ray has it. It never imports
the miniray runtime.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import sysconfig
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import cloudpickle

from miniray.cluster import _wire

_SYSTEM_PATHS = tuple(p for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                  sysconfig.get_paths()["platlib"]} if p)


class Driver:
    def __init__(self, sock: socket.socket, spec: dict):
        import ray

        self.ray = ray
        self.sock = sock
        self.spec = spec
        self.write_lock = threading.Lock()
        self.functions: dict = {}
        self.actors: dict = {}
        self.by_value: set = set()
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="miniray-cluster")
        # Waits for the values of refs nested in results (apart: they may take long).
        self.fetch_pool = ThreadPoolExecutor(8, thread_name_prefix="miniray-nested")

    # -- replies ---------------------------------------------------------------------
    def send(self, message) -> None:
        data = _wire.pack(message)
        with self.write_lock:
            self.sock.sendall(data)

    def reply_ok(self, rid, value) -> None:
        ray = self.ray
        try:
            payload, nested = _wire.dump_nested(value, lambda obj: isinstance(obj, ray.ObjectRef))
        except Exception as exc:  # the value itself does not pickle
            self.reply_error(rid, exc, "pickling the result")
            return
        if not nested:
            self.send(("okp", rid, payload, None))
            return

        def fetch():
            # Ray refs nested in the result (a task returning refs it made):
            # the control plane cannot read Ray's store, so their values go
            # along and become miniray refs there. Not on Ray's callback thread.
            try:
                values = cloudpickle.dumps(ray.get(nested), protocol=5)
            except BaseException as exc:
                self.reply_error(rid, exc, "getting refs nested in the result: ")
                return
            self.send(("okp", rid, payload, values))

        self.fetch_pool.submit(fetch)

    def reply_error(self, rid, exc: BaseException, where: str = "") -> None:
        ray = self.ray
        kind = "app"
        cause = exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = exc.cause if exc.cause is not None else exc
            tb = str(exc)
        elif isinstance(exc, ray.exceptions.RayActorError):
            kind = "actor"
        elif isinstance(exc, ray.exceptions.RayError):
            kind = "system"
        try:
            blob = cloudpickle.dumps(cause)
            cloudpickle.loads(blob)
        except Exception:
            blob = None
        try:
            self.send(("err", rid, kind, type(cause).__name__, blob, where + tb))
        except OSError:
            pass

    # -- requests --------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            message = _wire.recv_message(self.sock)
            if message is None or message[0] == "exit":
                return
            try:
                getattr(self, "on_" + message[0])(*message[1:])
            except Exception as exc:
                rid = message[1] if len(message) > 1 and isinstance(message[1], int) else None
                if rid is not None:
                    self.reply_error(rid, exc, f"driver of {self.spec['name']}: ")

    def _by_value(self, obj) -> None:
        # Ray workers of a remote cluster cannot import the user's own modules
        # (tests, scripts beside the driver): ship those by value, as Ray does
        # for __main__. Installed packages stay by reference.
        module_name = getattr(obj, "__module__", None)
        if not module_name or module_name in self.by_value or module_name == "__main__":
            return
        module = sys.modules.get(module_name)
        path = getattr(module, "__file__", None) or ""
        if module is None or module_name.split(".")[0] in ("miniray", "ray") \
                or os.path.abspath(path).startswith(_SYSTEM_PATHS) or not path:
            return
        cloudpickle.register_pickle_by_value(module)
        self.by_value.add(module_name)

    def _args(self, payload):
        args_blob, nested_values = _wire.unpack(payload)
        return _wire.load_nested(args_blob, nested_values, self.ray.put)

    def on_fn(self, fn_id, blob) -> None:
        obj = cloudpickle.loads(blob)
        self._by_value(obj)
        self.functions[fn_id] = self.ray.remote(obj)

    def _options(self, options: dict) -> dict:
        options = dict(options)
        runtime_env = self.spec.get("runtime_env")
        if runtime_env and "runtime_env" not in options:
            options["runtime_env"] = runtime_env
        return options

    def _watch(self, rid, refs, single: bool) -> None:
        remaining = [len(refs)]
        values = [None] * len(refs)
        lock = threading.Lock()

        def done(index, future):
            try:
                values[index] = future.result()
            except BaseException as exc:
                with lock:
                    if remaining[0] < 0:
                        return
                    remaining[0] = -1
                self.reply_error(rid, exc)
                return
            with lock:
                if remaining[0] < 0:
                    return
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self.reply_ok(rid, values[0] if single else values)

        if not refs:
            self.reply_ok(rid, [])
        for index, ref in enumerate(refs):
            ref.future().add_done_callback(lambda f, i=index: done(i, f))

    def on_task(self, rid, fn_id, payload, options, num_returns) -> None:
        args, kwargs = self._args(payload)
        remote = self.functions[fn_id].options(**self._options(options))
        refs = remote.remote(*args, **kwargs)
        if num_returns == 1:
            self._watch(rid, [refs], True)
        else:
            self._watch(rid, list(refs or ()), False)

    def on_actor_new(self, rid, key, fn_id, payload, options) -> None:
        args, kwargs = self._args(payload)
        cls = self.functions[fn_id]
        self.actors[key] = cls.options(**self._options(options)).remote(*args, **kwargs)
        self.reply_ok(rid, None)

    def on_actor_get(self, rid, key, name, namespace) -> None:
        def attach():
            handle = self.ray.get_actor(name, namespace=namespace)
            self.actors[key] = handle
            descriptor = getattr(handle, "_ray_actor_creation_function_descriptor", None)
            return getattr(descriptor, "class_name", None) or name

        self._in_pool(rid, attach)

    def on_actor_call(self, rid, key, method, payload, num_returns) -> None:
        handle = self.actors.get(key)
        if handle is None:
            raise KeyError(f"actor {key} is not known to this driver (it was lost when the "
                           "connection to its cluster was re-established)")
        args, kwargs = self._args(payload)
        bound = getattr(handle, method)
        if num_returns != 1:
            bound = bound.options(num_returns=num_returns)
        refs = bound.remote(*args, **kwargs)
        self._watch(rid, [refs] if num_returns == 1 else list(refs), num_returns == 1)

    def on_actor_kill(self, key, no_restart=True) -> None:
        handle = self.actors.pop(key, None)
        if handle is not None:
            self.ray.kill(handle, no_restart=no_restart)

    def _in_pool(self, rid, fn, *args) -> None:
        def run():
            try:
                value = fn(*args)
            except BaseException as exc:
                self.reply_error(rid, exc)
            else:
                self.reply_ok(rid, value)

        self.pool.submit(run)

    def on_probe(self, rid) -> None:
        ray = self.ray

        def probe():
            nodes = ray.nodes()
            return {"total": ray.cluster_resources(), "available": ray.available_resources(),
                    "nodes": sum(1 for n in nodes if n.get("Alive"))}

        self._in_pool(rid, probe)

    def _jobs(self):
        from ray.job_submission import JobSubmissionClient

        dashboard = self.spec.get("dashboard")
        if not dashboard:
            raise ValueError(f"cluster {self.spec['name']!r} has no dashboard address: add "
                             "dashboard='http://host:8265' to its config to submit jobs")
        return JobSubmissionClient(dashboard)

    def on_job_submit(self, rid, entrypoint, runtime_env, submission_id, metadata) -> None:
        self._in_pool(rid, lambda: self._jobs().submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
            metadata=metadata))

    def on_job_status(self, rid, job_id) -> None:
        self._in_pool(rid, lambda: str(self._jobs().get_job_status(job_id)).split(".")[-1])

    def on_job_logs(self, rid, job_id) -> None:
        self._in_pool(rid, lambda: self._jobs().get_job_logs(job_id))

    def on_job_stop(self, rid, job_id) -> None:
        self._in_pool(rid, lambda: self._jobs().stop_job(job_id))


def _endpoint(address: str) -> tuple[str, int]:
    """The (host, port) Ray listens on for ``address`` (GCS or Ray Client)."""
    if address.startswith("ray://"):
        address = address[len("ray://"):]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _refused(endpoint, attempts: int = 3, pause: float = 0.1) -> str | None:
    """A reason if every attempt to connect to ``endpoint`` is refused, else None.

    Refused (nothing listens on the port) is the only answer taken as proof
    that the cluster's head is gone: a connect that succeeds or merely times
    out (a slow or hung cluster, a lossy network) is left to the health probes.
    """
    reason = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause)
        try:
            socket.create_connection(endpoint, timeout=2.0).close()
            return None
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED:  # unreachable may be the network, not Ray
                return None
            reason = os.strerror(exc.errno)
    return reason


def watch_head(endpoint, on_lost, interval: float = 1.0) -> threading.Thread:
    """Call ``on_lost(reason)`` as soon as the cluster's head process is gone.

    Ray's own driver keeps retrying a dead GCS for a minute; this holds an idle
    TCP connection to the head's port instead. The kernel closes it the
    moment the process dies (SIGKILL included), and a reconnect that is
    refused confirms it: the loss is seen in milliseconds, not after several
    health probes time out. A merely slow or stopped head keeps the
    connection open, so it is never declared dead here.
    """

    def run():
        while True:
            try:
                conn = socket.create_connection(endpoint, timeout=5.0)
            except OSError:
                conn = None
            if conn is None:
                reason = _refused(endpoint)
                if reason is not None:
                    on_lost(f"the head of the cluster at {endpoint[0]}:{endpoint[1]} is gone "
                            f"({reason}): its Ray processes died")
                    return
                time.sleep(interval)
                continue
            try:
                conn.setblocking(False)
                while True:
                    # Readable means closed (or stray bytes, which we drop):
                    # we never send, so a live server has nothing to say.
                    ready, _, _ = select.select([conn], [], [], interval)
                    if ready:
                        try:
                            if not conn.recv(4096):
                                break
                        except BlockingIOError:
                            continue
                        except OSError:
                            break
            finally:
                conn.close()

    thread = threading.Thread(target=run, name="miniray-head-watch", daemon=True)
    thread.start()
    return thread


class AuthenticationFailed(Exception):
    """The cluster rejected this driver's token."""


def check_token(address: str, timeout: float = 10.0) -> None:
    """Raise :class:`AuthenticationFailed` at once if the GCS at ``address``
    rejects the token this process would send.

    ``ray.init`` retries an unauthenticated GCS for ~20 s and then reports a
    bare connection failure; one cheap RPC with Ray's own token metadata tells
    the two apart in milliseconds. Any other outcome (unreachable, an older
    GCS) is left to ``ray.init``.
    """
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # pragma: no cover - part of ray
        return
    try:
        from ray._private.authentication.grpc_authentication_client_interceptor import \
            _get_authentication_metadata_tuple

        metadata = _get_authentication_metadata_tuple()
    except Exception:  # a Ray without token authentication
        metadata = ()
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout,
                              metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                which = "its token was rejected" if metadata else "it requires a token"
                raise AuthenticationFailed(
                    f"authentication failed: the Ray cluster at {address} refused this "
                    f"driver ({which}: {exc.details()}); give the cluster's token as "
                    "auth_token or auth_token_path in its ClusterConfig") from None


def main() -> None:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    spec = _wire.recv_message(sock)
    try:
        import ray

        address = spec["address"]
        kwargs = {"address": address, "logging_level": "WARNING",
                  "namespace": spec.get("namespace")}
        if not address.startswith("ray://"):
            host = address.rsplit(":", 1)[0]
            if host in ("127.0.0.1", "localhost"):
                # Ray maps 127.0.0.1 to the machine's routable address; a driver
                # for a loopback-only cluster must stay on loopback to find its raylet.
                kwargs["_node_ip_address"] = "127.0.0.1"
            check_token(address)
        ray.init(**kwargs)
        info = {"ray_version": ray.__version__, "python": sys.version.split()[0],
                "pid": os.getpid()}
        driver = Driver(sock, spec)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, AuthenticationFailed) else \
            f"{type(exc).__name__}: {exc}"
        try:
            sock.sendall(_wire.pack(("hello_failed", message)))
        finally:
            os._exit(1)
    sock.sendall(_wire.pack(("hello", info)))
    try:
        def report(reason):
            try:
                driver.send(("lost", reason))
            except OSError:  # the control plane is gone already
                pass

        watch_head(_endpoint(spec["address"]), report)
    except (ValueError, OSError):  # an address we cannot watch: the probes still cover it
        pass
    try:
        driver.serve()
    finally:
        # Exit without Ray's atexit teardown racing our socket; Ray cleans up
        # a driver that went away.
        try:
            ray.shutdown()
        finally:
            os._exit(0)


if __name__ == "__main__":
    main()
