"""The Ray engine of dataset runs and atlases: the same shards, written by a pool of Ray actors that
each hold a replica of the model (one per GPU with a CUDA model, otherwise one per CPU, one thread
each). A shard is any job with a ``target`` file, written by ``work(model, job)`` (which returns the
number of items it did); the job list is the same as the local engine's.

A local Ray instance is started (and stopped) when none is running and no address is given; an
address joins an existing cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others; the output folder must then be on storage every node sees).
Failed actors are restarted and their shards retried by Ray; the shard files make a run resumable
exactly as with the local engine, and the results are the same. Ray is an optional extra:
``pip install 'convscope[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..errors import ConvscopeError, ConvscopeWarning, InputError
from ..model import Model
from ..network import reachable

#: What a shard's worker does: ``work(model, job)`` writes the job's ``target`` and returns the
#: number of items (images, pictures) it did.
Work = Callable[[Model, Any], int]


def check_ray() -> None:
    """InputError naming the extra when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise InputError("engine ray needs Ray, which is not installed: pip install 'convscope[ray]'",
                         parameter="engine") from None


class ShardWriter:
    """A Ray actor: a model replica that writes whole shards with ``work``."""

    def __init__(self, model: Model, work: Work, threads: int) -> None:
        torch.set_num_threads(threads)
        if model.device.type == "cuda":
            model.module.to(torch.device("cuda", torch.cuda.current_device()))
        self.model, self.work = model, work

    def write(self, job: Any) -> int:
        return self.work(self.model, job)


def _ship_user_code(model: Model) -> None:
    """The actors must rebuild the model: the modules of classes defined outside installed packages
    (a script, a notebook, a test file) are pickled by value, so the workers need not import them."""
    import ray.cloudpickle as cloudpickle

    for module in model.module.modules():
        source = sys.modules.get(type(module).__module__)
        path = getattr(source, "__file__", None) or ""
        if source is not None and "-packages" not in path and not path.startswith(sys.base_prefix):
            cloudpickle.register_pickle_by_value(source)


def _reachable(address: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` (or ``ray://host:port``) opens within ``timeout``
    seconds; other forms (``auto``) are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return True
    return reachable(host, int(port), timeout)


def check_reachable(address: str | None) -> None:
    """InputError naming ``ray_address`` when a cluster address given cannot be reached."""
    if address and not _reachable(address):
        raise InputError(f"ray_address {address}: cannot reach a Ray cluster there", parameter="ray_address")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Ray, connected for the block: to the cluster at ``address`` (or a local Ray started for the
    block and stopped after it) unless this process is connected already; yields the ``ray`` module."""
    import ray

    check_reachable(address)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                     logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"ray_address {address}: cannot reach a Ray cluster there ({exc})".replace("\n", " "),
                             parameter="ray_address") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def run_on_ray(model: Model, jobs: Sequence[Any], work: Work, address: str | None = None,
               progress: Callable[[int], None] | None = None, retries: int = 2) -> None:
    """Write ``jobs`` with ``work`` on a pool of Ray actors (see the module notes) in a
    :func:`ray_session`; a shard whose actor dies (a lost node) is given to a new actor, ``retries``
    times at most. ``progress`` is called with each finished shard's count."""
    with ray_session(address) as ray:
        if jobs:
            _write_all(ray, model, list(jobs), work, progress, retries)


def _write_all(ray, model: Model, jobs: list[Any], work: Work, progress: Callable[[int], None] | None,
               retries: int) -> None:
    """The pool's loop: a shard to each idle actor; a shard whose actor died (its node lost) is said in
    one line and queued again, for an idle actor or a fresh replica; once no shard waits, idle actors
    are released, so that a replica waiting for resources (a lost node's CPU held by them) gets them.
    A convscope error inside a shard (a full disk) ends the run with that error."""
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    on_gpu = model.device.type == "cuda"
    count = min(len(jobs), max(1, int(resources.get("GPU", 0))) if on_gpu else cpus)
    writer = ray.remote(num_cpus=1, num_gpus=1 if on_gpu else 0)(ShardWriter)
    _ship_user_code(model)
    shared = ray.put(model)

    def new_actor():
        return writer.remote(shared, work, max(1, cpus // count))

    idle = [new_actor() for _ in range(count)]
    waiting = list(enumerate(jobs))
    tries = {index: 0 for index, _ in waiting}
    running: dict = {}
    while waiting or running:
        while waiting and idle:
            index, job = waiting.pop(0)
            actor = idle.pop()
            running[actor.write.remote(job)] = (index, job, actor)
        if not waiting:
            for actor in idle:
                ray.kill(actor)
            idle.clear()
        finished, _ = ray.wait(list(running), num_returns=1)
        index, job, actor = running.pop(finished[0])
        try:
            done = ray.get(finished[0])
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ConvscopeError):
                raise cause from None
            tries[index] += 1
            if tries[index] > retries:
                raise RuntimeError(f"shard {job.target.name} failed {tries[index]} times on Ray: {exc}") from None
            warnings.warn(f"shard {job.target.name} was lost with its Ray worker ({type(exc).__name__}); running it "
                          "again", ConvscopeWarning, stacklevel=2)
            waiting.insert(0, (index, job))
            if not idle:
                idle.insert(0, new_actor())  # a fresh replica, used once the live ones are busy
            continue
        idle.append(actor)
        if progress is not None:
            progress(done)
