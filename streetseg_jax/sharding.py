"""Devices and hosts: one `data` mesh axis over every device of every process, global batches from local data.

Data parallelism through jit + NamedSharding (not pmap): parameters are replicated, batches are split along their
leading axis over the `data` axis, and XLA inserts the gradient all-reduce. BatchNorm statistics are then
computed over the global batch.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from typing import Callable, NoReturn, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, multihost: bool = False, timeout_s: int = 300) -> None:
    """Join JAX's distributed runtime when asked to (explicit addresses, or `multihost` to let JAX detect SLURM &c.).

    Every process waits up to `timeout_s` for all of them to join. JAX aborts the process (no Python exception)
    when that runs out, so the wait is announced first; a coordinator port already taken on process 0's machine
    (which crashes JAX) is refused here with ValueError.
    """
    if not (multihost or coordinator_address):
        return
    if coordinator_address:
        _check_address(coordinator_address)     # on every process: JAX raised an IndexError on the others
    if coordinator_address and process_id == 0:
        _check_port_free(coordinator_address)
    joining = (f"process {process_id} of {num_processes}: joining through {coordinator_address}" if coordinator_address
               else "joining the cluster JAX detects (--multihost)")
    print(f"{joining}, waiting up to {timeout_s} s for every process to start", flush=True)
    # CPU devices need a collectives implementation to reduce across processes; the setting only touches the CPU
    # backend, and asking which backend is in use would start it too early.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except ValueError as e:     # "coordinator_address should be defined.", JAX's words for "no cluster found"
        if coordinator_address:
            raise
        raise ValueError(f"--multihost: {e} (JAX takes the coordinator, the number of processes and each one's id "
                         "from a cluster's environment: SLURM, Open MPI, a TPU pod; elsewhere give "
                         "--coordinator_address, --num_processes and --process_id)") from None


def _check_address(coordinator_address: str) -> None:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--coordinator_address {coordinator_address!r}: expected HOST:PORT, e.g. 10.0.0.1:12345")


def _check_port_free(coordinator_address: str) -> None:
    port = coordinator_address.rpartition(":")[2]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: a port left in TIME_WAIT by an earlier run is free, one something listens on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", int(port)))
        except OSError as e:
            raise ValueError(f"--coordinator_address {coordinator_address}: process 0 cannot listen on port {port} "
                             f"({e.strerror}; another run's coordinator?): choose another port") from None


class OtherProcessFailed(RuntimeError):
    """Another process of a multi-process run failed; the message is its error."""


T = TypeVar("T")
_MESSAGE_BYTES = 2048


def all_succeed(work: Callable[[], T]) -> T:
    """`work()` here; in a multi-process run every process then learns whether it succeeded everywhere, and where
    it failed, every process raises: the failed ones their own error, the others OtherProcessFailed with the first
    failed process's message. A process that stopped alone left the others waiting in their next collective until
    JAX aborted all of them, five minutes later, with a stack dump of its own."""
    if jax.process_count() == 1:
        return work()
    try:
        result, error = work(), None
    except BaseException as e:  # noqa: BLE001 - every process must reach the gather below (Ctrl-C included)
        result, error = None, e
    messages = _gather_text("" if error is None else str(error) or type(error).__name__)
    if error is not None:
        raise error
    failed = [(i, text) for i, text in enumerate(messages) if text]
    if failed:
        index, text = failed[0]
        raise OtherProcessFailed(f"process {index} of {len(messages)} stopped: {text}")
    return result


def is_multiprocess() -> bool:
    """Whether this process is one of several under jax.distributed (asked without starting JAX's backends when it
    is not)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


_STOPPED_KEY = "streetseg_jax/stopped/"
_LEAVING_KEY = "streetseg_jax/leaving/"
_ONE_STOP = threading.Lock()    # the main thread and the watcher (watch_other_processes) may both stop the process


def stop_alone(line: str, code: int, record: bool = True) -> NoReturn:
    """End this process of a multi-process run now: print `line`, leave it where the other processes look for it
    (`record`: where it is this process's own failure, not its report of another's), and exit without JAX's
    shutdown barrier. A process that failed alone waited at that barrier for the others, which waited in their next
    collective for it, until JAX aborted every process 80-300 s later with stack dumps; its closed connections now
    end the others' collectives at once, and the others' watchers see its line within a second.

    Process 0 leaves last: it holds JAX's coordination service, and JAX aborts, with a stack dump, every process
    still running when that goes (one that had not yet said why it stopped, on a loaded machine)."""
    _ONE_STOP.acquire()         # never released: os._exit below ends a second caller too
    try:
        with contextlib.suppress(OSError):      # a closed terminal (an ssh session gone) must not keep us alive
            print(line, file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        me = jax.process_index()
        said = {f"{_STOPPED_KEY}{me}": line[:_MESSAGE_BYTES]} if record else {}
        _tell({**said, f"{_LEAVING_KEY}{me}": ""} if me else said)       # 'leaving' last: then only _exit is left
        if me == 0:
            _let_the_others_leave()
    finally:
        os._exit(code)


def _tell(values: dict[str, str], timeout_s: float = 2.0) -> None:
    """Set `values` in the coordination service, giving up after `timeout_s` (a frozen process 0 never answers)."""
    def put():
        for key, value in values.items():
            with contextlib.suppress(Exception):    # best effort: the others then say one stopped without a word
                _client().key_value_set(key, value)
    if values:
        writer = threading.Thread(target=put, daemon=True)
        writer.start()
        writer.join(timeout_s)


def _let_the_others_leave(timeout_s: float = 6.0, silent_s: float = 3.0, grace_s: float = 0.2) -> None:
    """Wait until every other process has left (stop_alone), finished, or its heartbeat has been silent for
    `silent_s` (killed or frozen), for at most `timeout_s`; then `grace_s` more for the last one's exit itself."""
    start = time.monotonic()
    waiting = set(range(1, jax.process_count()))
    heard = {i: (None, start) for i in waiting}      # no beat yet counts as silence from now on
    with contextlib.suppress(Exception):        # whatever JAX's client raises, process 0 still leaves
        while waiting and time.monotonic() < start + timeout_s:
            left = {_index(key) for key, _ in _client().key_value_dir_get(_LEAVING_KEY)}
            now = time.monotonic()
            _hear(heard, _client().key_value_dir_get(_ALIVE_KEY), now)
            for i in sorted(waiting):
                if i in left or heard[i][0] == "done" or now - heard[i][1] >= silent_s:
                    waiting.discard(i)
            time.sleep(0.05)
        time.sleep(grace_s)


def _index(key: str) -> int:
    """The process index a key of ours ends with."""
    return int(key.rsplit("/", 1)[-1])


def _hear(heard: dict[int, tuple], beats: list[tuple[str, str]], now: float) -> None:
    """Update `heard` (process index -> (its last beat, when that changed)) with the heartbeat keys read now."""
    for key, value in beats:
        if heard.get(_index(key), (None,))[0] != value:
            heard[_index(key)] = (value, now)


# How a collective with a process that is gone fails: gloo on CPUs, NCCL on GPUs, the coordination service.
_PEER_GONE = ("closed by peer", "connection reset", "gloo", "nccl", "unavailable")


def lost_process(error: Exception) -> str | None:
    """Why a collective failed (`error`), in a line, where another process is to blame: the line a process that
    stopped left (`stop_alone`), or that one stopped without a word; None where the error is this process's own (out
    of memory, say)."""
    left = _reasons_left()
    if left:
        return _stopped(*min(left.items()))
    text = str(error).strip()
    if not any(word in text.lower() for word in _PEER_GONE):
        return None
    return (f"the other processes cannot be reached: one stopped without a word (killed, out of memory, or its "
            f"machine went away) ({text.splitlines()[0][:300]})")


def _stopped(index: int, line: str) -> str:
    """What the others say of a process that stopped leaving `line` (stop_alone)."""
    return f"process {index} of {jax.process_count()} stopped: {line.removeprefix('error: ')}"


def _reasons_left() -> dict[int, str]:
    """process index -> the line it left when it stopped (stop_alone)."""
    try:
        return {_index(key): line for key, line in _client().key_value_dir_get(_STOPPED_KEY)}
    except Exception:  # noqa: BLE001 - the coordinator itself may be gone
        return {}


_ALIVE_KEY = "streetseg_jax/alive/"
SILENCE_S = 30.0        # a process whose heartbeat stops this long is gone (JAX's own heartbeat waits 100 s, then aborts)


def watch_other_processes(interval_s: float = 1.0) -> Callable[[], None]:
    """In a multi-process run, keep a heartbeat of this process where the others see it, and stop this process
    (`stop_alone`) once another's heartbeat, or the coordination service itself (process 0), has been silent for
    SILENCE_S: a process that froze, or was lost while the others set up a collective, left them waiting for JAX's
    heartbeat timeout and its abort. Once another process has stopped on an error of its own (stop_alone), this one
    stops too within `interval_s`, with that process's reason, even where it waits in a collective that the other's
    exit does not end (process 0's: process 0 leaves last). Returns the call that says this process is done (its
    heartbeat ends without alarming the others)."""
    if not is_multiprocess():
        return lambda: None
    client, me, done, lock = _client(), jax.process_index(), threading.Event(), threading.Lock()
    heard: dict[int, tuple[str, float]] = {}     # process index -> (its last beat, when that changed)
    answered = [time.monotonic()]                # when the coordination service last answered

    def beat():
        count = 0
        while not done.wait(interval_s):
            count += 1
            try:
                client.key_value_set(f"{_ALIVE_KEY}{me}", str(count), allow_overwrite=True)
                beats = client.key_value_dir_get(_ALIVE_KEY)
            except Exception:  # noqa: BLE001 - the coordinator is gone: JAX's client ends this process itself
                return
            with lock:
                answered[0] = time.monotonic()
                _hear(heard, beats, answered[0])
            others = {i: line for i, line in _reasons_left().items() if i != me}
            if others:      # one stopped on an error of its own; this one may be waiting in a collective with it
                stop_alone("error: " + _stopped(*min(others.items())), 2, record=False)
        with contextlib.suppress(Exception):    # after the last beat: nothing overwrites it
            client.key_value_set(f"{_ALIVE_KEY}{me}", "done", allow_overwrite=True)

    def alarm():        # apart from `beat`, whose calls a frozen coordinator leaves waiting for good
        while not done.wait(interval_s):
            now = time.monotonic()
            with lock:
                silent = silent_processes(heard, answered[0])
                coordinator_silent = now - answered[0] > SILENCE_S
            if coordinator_silent:
                stop_alone(f"error: the coordination service (process 0) stopped answering {SILENCE_S:.0f} s ago "
                           "(frozen, or its machine went away)", 2, record=False)
            if silent:      # one that left a reason first was stopped for by `beat`, a second after
                stop_alone(f"error: process {silent[0]} of {jax.process_count()} stopped answering {SILENCE_S:.0f} s "
                           "ago (killed, out of memory, or its machine went away)", 2, record=False)

    beating = threading.Thread(target=beat, name="streetseg-heartbeat", daemon=True)
    beating.start()
    threading.Thread(target=alarm, name="streetseg-watch", daemon=True).start()

    def finished():
        done.set()
        beating.join(timeout=5)

    return finished


def silent_processes(heard: dict[int, tuple[str, float]], answered: float) -> list[int]:
    """The processes whose beat the coordination service, answering, has shown unchanged for SILENCE_S. A frozen
    process 0 (the service itself) leaves its last beat up to a second older than the last answer: not silent, the
    service's own alarm is due (it was named as a killed process when its last beat fell a second before)."""
    return sorted(i for i, (value, since) in heard.items() if value != "done" and answered - since > SILENCE_S)


def _client():
    from jax._src import distributed     # JAX's coordination service client: a key-value store every process sees
    return distributed.global_state.client


def decided_by_first(name: str, text: str, decide: Callable[[list[str]], str], timeout_s: float = 120.0) -> str:
    """Process 0's `decide(every process's text, in process order)`, as every process learns it, through the
    coordination service's key-value store: unlike a gather it needs no devices (a process with another number of
    them failed every gather: 'cannot reshape array') and no size limit, in 2 requests per process. Each `name` once
    per run (keys stay for the run's life)."""
    client, me, wait_ms = _client(), jax.process_index(), int(timeout_s * 1000)
    try:
        if me:
            client.key_value_set(f"streetseg_jax/{name}/{me}", text)
            return client.blocking_key_value_get(f"streetseg_jax/{name}/decided", wait_ms)
        texts = [text] + [client.blocking_key_value_get(f"streetseg_jax/{name}/{i}", wait_ms)
                          for i in range(1, jax.process_count())]
    except Exception as e:  # noqa: BLE001 - JAX's timeout (DEADLINE_EXCEEDED), or the coordinator gone
        raise OtherProcessFailed(f"the processes did not all answer within {timeout_s:.0f} s at start ({e})") from None
    decided = decide(texts)
    client.key_value_set(f"streetseg_jax/{name}/decided", decided)
    return decided


def _gather_text(text: str) -> list[str]:
    """Every process's `text` (its first _MESSAGE_BYTES bytes of UTF-8), in process order."""
    data = text.encode()[:_MESSAGE_BYTES]
    buffer = np.zeros(_MESSAGE_BYTES, np.uint8)
    buffer[:len(data)] = np.frombuffer(data, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(buffer))
    return [bytes(row).rstrip(b"\0").decode(errors="ignore") for row in rows]


_FEWER_DEVICES = ""     # split_cpu_into_cores' note, said by a run once it knows it runs on the CPU


def fewer_devices_note() -> str:
    """Why the CPU has fewer devices than cores, or other than --cpu_devices asked ("" when it has not, or the run is
    on a GPU)."""
    return _FEWER_DEVICES if _FEWER_DEVICES and jax.default_backend() == "cpu" else ""


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_cpu_into_cores(*batch_sizes: int, requested: int = 0) -> None:
    """Give XLA one CPU device per core (or `requested` devices).

    XLA:CPU runs most convolutions of one program on a single thread, so a 2-core machine trains about 1.3x faster
    as two devices, each with half the batch, than as one device. The automatic count is the largest that is at
    most the cores this process may use and divides every batch size. Only the CPU backend is affected (a GPU run
    is unchanged), and an explicit `--xla_force_host_platform_device_count` in XLA_FLAGS wins. Once JAX has started
    its backends (a program that used JAX already) the devices stay as they are.
    """
    global _FEWER_DEVICES
    _FEWER_DEVICES = ""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        if requested:       # taken without a word
            _FEWER_DEVICES = (f"note: --cpu_devices {requested} is not taken: XLA_FLAGS's "
                              "--xla_force_host_platform_device_count decides the CPU devices")
        return
    cores = usable_cores()
    count = requested or max(n for n in range(1, cores + 1) if all(size % n == 0 for size in batch_sizes))
    if count < cores and not requested:
        sizes = " and ".join(str(size) for size in batch_sizes)
        _FEWER_DEVICES = (f"note: {count} CPU device(s) for {cores} cores: the batch sizes ({sizes}) do not divide "
                          f"by more (a batch size that is a multiple of {cores} trains faster here)")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:        # "should be updated before backends are initialized"
        pass


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(mesh: Mesh, **batches: int) -> None:
    """Refuse global batches that do not split evenly over the devices (processes have as many each: run.
    check_same_start); the keywords are the config keys a user would change. All of them in one message, and on one
    process the device counts that would take them first: a resume is better served by those than by a new recipe."""
    devices = mesh.devices.size
    uneven = {key: batch for key, batch in batches.items() if batch % devices}
    if not uneven:
        return
    named = " and ".join(f"{key} {batch}" for key, batch in uneven.items())
    sizes = " ".join(f"--config.{key}={max(devices, batch // devices * devices)}" for key, batch in uneven.items())
    fits = [n for n in range(1, devices) if all(batch % n == 0 for batch in batches.values())]
    forced = (mesh.devices.flat[0].platform == "cpu"
              and "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""))
    how = ("XLA_FLAGS's --xla_force_host_platform_device_count=N, which decides the CPU devices here" if forced else
           "--cpu_devices N on a CPU, CUDA_VISIBLE_DEVICES on GPUs")
    where = "" if not fits or jax.process_count() > 1 else (
        f"run on {', '.join(map(str, fits[:-1]))}{' or ' * (len(fits) > 1)}{fits[-1]} device(s) ({how}), or ")
    recipe = "; for a run under way, another batch_size is another recipe" if "batch_size" in uneven else ""
    raise ValueError(f"{named} must divide by the number of devices ({devices}): {where}give batch sizes that do "
                     f"({sizes}{recipe})")


def global_batch(local: dict, mesh: Mesh) -> dict:
    """Assemble global arrays, sharded over `data`, from this process's rows of the global batch."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
