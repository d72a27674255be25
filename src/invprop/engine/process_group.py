"""Process-group setup for multi-process training launched by torchrun, and the few collectives the loop needs.

invprop never starts processes itself: ``torchrun`` (or any launcher that sets the same environment variables:
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) does, and :func:`init_distributed`
joins the group. Without those variables everything runs in one process, as before.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from invprop.errors import ConfigError, DeviceUnavailable, PeerLost

logger = logging.getLogger(__name__)

#: Environment variables set by torchrun for every process.
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_LOCAL_RANK = "LOCAL_RANK"
#: Set by torchrun (torch.distributed.elastic) for every process, whatever the process count.
ENV_TORCHRUN = "TORCHELASTIC_RUN_ID"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the run.

    Attributes:
        rank: global rank (0 = the main process, which logs and writes files).
        world_size: number of processes W.
        local_rank: rank on this machine (selects the GPU).
        joined: this process joined a process group (set by :func:`init_distributed`; a torchrun job of one
            process joins a group of one).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False
    #: ``(host name, pid)`` of every process, by rank (empty in one process): which one ended, when one does.
    processes: tuple[tuple[str, int], ...] = ()

    @property
    def enabled(self) -> bool:
        """True when training runs under a process group: several processes, or torchrun with one."""
        return self.world_size > 1 or self.joined

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()


def launched_distributed() -> bool:
    """True under torchrun (any process count), or when a launcher asked for more than one process."""
    try:
        processes = int(os.environ.get(ENV_WORLD_SIZE, "1"))
    except ValueError:
        return False
    return processes > 1 or (ENV_WORLD_SIZE in os.environ and ENV_TORCHRUN in os.environ)


def launched_rank() -> int:
    """This process's global rank as the launcher set it (0 without one), readable before joining the group."""
    try:
        return int(os.environ.get(ENV_RANK, "0"))
    except ValueError:
        return 0


def init_distributed(device: str = "auto", backend: str = "auto", timeout_minutes: int = 60) -> DistributedContext:
    """Join the process group torchrun described in the environment (or return the single-process context).

    Args:
        device: the configured device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); on CUDA each process uses GPU
            ``LOCAL_RANK``.
        backend: ``auto`` (nccl on CUDA, gloo on CPU), ``nccl`` or ``gloo``.
        timeout_minutes: collective timeout.
    """
    if not launched_distributed():
        return SINGLE_PROCESS
    try:
        rank = int(os.environ[ENV_RANK])
        world_size = int(os.environ[ENV_WORLD_SIZE])
        local_rank = int(os.environ.get(ENV_LOCAL_RANK, "0"))
    except (KeyError, ValueError):
        raise ConfigError(
            f"{ENV_WORLD_SIZE} is set but {ENV_RANK}/{ENV_LOCAL_RANK} are missing or not integers; launch with torchrun"
        ) from None
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise ConfigError("distributed.backend=nccl needs CUDA; use distributed.backend=gloo (or auto) on CPU")
    if use_cuda:
        if not torch.cuda.is_available():
            raise DeviceUnavailable(device)
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; lower --nproc_per_node"
            )
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    table: list[tuple[str, int] | None] = [None] * world_size
    dist.all_gather_object(table, (socket.gethostname(), os.getpid()))
    processes = tuple(entry for entry in table if entry is not None)
    context = DistributedContext(rank, world_size, local_rank, joined=True, processes=processes)
    if not context.is_main:
        logging.getLogger("invprop").setLevel(logging.WARNING)  # one process reports progress
    logger.info("distributed: %d processes, backend %s", world_size, backend)
    return context


#: What a collective says when a process of the group is gone (gloo: the socket to it; NCCL: its communicator).
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted")


def _has_ended(pid: int) -> bool:
    """Whether process ``pid`` (on this machine) has ended: gone, or a zombie its launcher has not reaped yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def peer_lost(err: BaseException, context: DistributedContext) -> PeerLost | None:
    """The one-line :class:`~invprop.errors.PeerLost` for a collective that failed because another process of the
    job ended (None for any other error, or in one process). Names the ended processes of this machine."""
    if not context.enabled or not isinstance(err, RuntimeError) or not any(m in str(err) for m in _PEER_GONE):
        return None
    host = socket.gethostname()
    ended = [
        f"process {rank} (pid {pid})"
        for rank, (where, pid) in enumerate(context.processes)
        if rank != context.rank and where == host and _has_ended(pid)
    ]
    return PeerLost(context.rank, context.world_size, ", ".join(ended) or "another process")


def device_for(context: DistributedContext, device: str) -> str:
    """The device this process trains on: ``cuda:LOCAL_RANK`` for CUDA runs of several processes."""
    if context.enabled and (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())):
        return f"cuda:{context.local_rank}"
    return device


def shutdown(context: DistributedContext) -> None:
    """Leave the process group (a no-op in one process)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(context: DistributedContext) -> Iterator[None]:
    """The main process runs the block first (e.g. filling a cache), the others after it."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def agree_to_stop(context: DistributedContext, stop: bool, device: torch.device) -> bool:
    """Whether any process of the run asked to stop (one all-reduce; ``stop`` itself in one process)."""
    if not context.enabled:
        return stop
    vote = torch.tensor([float(stop)], dtype=torch.float64, device=device)
    dist.all_reduce(vote)
    return bool(vote.item() > 0)
