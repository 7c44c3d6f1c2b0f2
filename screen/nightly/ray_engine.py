"""``screen run --engine ray``: the same night on Ray Data, from one machine to a cluster.

The driver (the ``screen run`` process) keeps what needs the whole archive or the ledger: it
plans and triages the studies against the ledger, fuses each study, writes its results and
alone commits to the ledger, so resume, supersede, the output lock and a ``kill -9`` of the
driver keep their guarantees (a study is done when its ledger row is; what a dead driver wrote
without one is swept and redone by the next night). Ray runs the per-file and per-image work:

- index: Ray Data tasks read the headers (``[ray] files_per_task`` files a task);
- decode: Ray Data tasks decode whole studies (``[ray] studies_per_task`` a task); a study
  past the deadline is not started (its row comes back *deferred*);
- members: one actor pool per member (``map_batches``, ``[ray] actors_per_member`` actors,
  each holding its model once, on ``member_gpus`` GPUs and ``member_cpus`` CPUs), images of
  several studies in one batch of ``[run] batch_size``.

Ray Data has no per-row timeout, and a read that hangs (a FIFO swapped in for a file) cannot be
interrupted inside a Ray worker: each file is read in a child process of the Ray task by
:func:`dicom_io.workers.run_tasks` (one worker process, ``[run] decode_timeout_s``), so a file
that hangs or crashes its decoder is that file's failure with its reason, as on one machine;
the Ray task itself never hangs or dies for it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from dicom_io.decode import DecodeTask, decode_one
from dicom_io.gsps import PipelineVoi
from dicom_io.pixels import PixelPolicy, Radiograph
from dicom_io.workers import Outcome, TaskFailure, run_tasks
from ensembles.types import MemberOutput
from screen.errors import ConfigError
from screen.nightly.plan import StudyPlan
from screen.nightly.site_members import load_member
from screen.nightly.study_job import StudyJob, StudyWritten, write_study
from screen.report.thumbs import Preview
from screen.site_config import RayResources, SiteConfig

if TYPE_CHECKING:  # ray is an optional extra: imported when the engine runs
    import ray.data

__all__ = ["ImageResult", "RayWriters", "night_dataset", "ray_map", "ray_scored", "ray_session", "require_ray"]

log = logging.getLogger("screen.run")

T = TypeVar("T")
R = TypeVar("R")

#: Times a study's writing task runs again when its node dies (writing a study again is safe:
#: nothing is recorded until the driver has its result).
WRITE_RETRIES = 3

#: Off: Ray keeps a one-machine instance on the loopback address (``ray_constants.ENABLE_RAY_CLUSTER``).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

#: Ray Data's own loggers: progress lines per dataset would fill the nightly log.
_RAY_LOGGERS = ("ray", "ray.data", "ray.data._internal")


def require_ray() -> None:
    """Raises:
        ConfigError: the ``ray`` package is not installed.
    """
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray Data: pip install 'fracture-screen[ray]' (on every node of the cluster), "
            "or run with the local engine (the default)"
        ) from None


@contextmanager
def ray_session(settings: RayResources, address: str | None = None) -> Iterator[None]:
    """Ray for the length of a run: join ``address`` (else ``[ray] address``), or start a local
    instance (``[ray] local_cpus``) and stop it afterwards. A Ray already initialised in this
    process (a test's, a notebook's) is used as it is and left running.

    Raises:
        ConfigError: Ray is not installed, or the cluster cannot be reached.
    """
    target = address if address is not None else settings.address
    if not target:
        loopback_only()
    require_ray()
    import ray

    if ray.is_initialized():
        _quiet_ray()
        yield
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "logging_level": logging.WARNING}
    try:
        if target:
            ray.init(address=target, **options)
        else:
            ray.init(num_cpus=settings.local_cpus or None, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {target!r}" if target else "a local Ray instance"
        raise ConfigError(f"cannot start or join {where}: {exc}. Start one with `ray start --head` "
                          "(README: \"Many machines: the Ray engine\") or leave --address out") from None
    _quiet_ray()
    try:
        yield
    finally:
        ray.shutdown()


def loopback_only() -> None:
    """A local Ray instance listens on 127.0.0.1 only (Ray would bind its ports to the machine's
    address, open to the network). Read when ``ray`` is first imported: call it before."""
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")


def _quiet_ray() -> None:
    """Ray Data's per-dataset progress lines off; rows keep their input order."""
    import ray.data

    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A column of Python objects (never stacked into one array, as numpy would do with equal
    shapes)."""
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def _dataset(items: Sequence[Any]) -> "ray.data.Dataset":
    import ray.data

    return ray.data.from_items([{"item": item} for item in items])


# -- index: per-file work as Ray tasks, each file in a child process ---------------------------


def _isolated(batch: dict[str, np.ndarray], *, func: Callable[[Any], Any], timeout_s: float | None,
              chunk_size: int) -> dict[str, np.ndarray]:
    """Run ``func`` on a batch's items in a child process of this Ray task (per-item timeout and
    crash isolation by :func:`run_tasks`), one outcome per item."""
    items = list(batch["item"])
    outcomes = list(run_tasks(func, items, workers=1, timeout_s=timeout_s, chunk_size=chunk_size))
    return {"outcome": _objects(outcomes)}


def ray_map(func: Callable[[T], R], items: Sequence[T], *, settings: RayResources, timeout_s: float | None,
            chunk_size: int = 1) -> Iterator[Outcome[T, R]]:
    """:func:`dicom_io.workers.run_tasks` on Ray: ``func`` over ``items`` as Ray Data tasks of
    ``[ray] files_per_task`` items, yielding outcomes in input order (the index pass)."""
    if not items:
        return
    dataset = _dataset(items).map_batches(
        partial(_isolated, func=func, timeout_s=timeout_s, chunk_size=chunk_size),
        batch_size=settings.files_per_task, batch_format="numpy", num_cpus=settings.decode_cpus)
    for row in dataset.iter_rows():
        yield row["outcome"]


# -- the night: decode tasks, member actor pools ----------------------------------------------


@dataclass(frozen=True)
class StudyTask:
    """One study's decode requests (a row of the decode stage)."""

    study: str
    images: tuple[DecodeTask, ...]


@dataclass(frozen=True)
class ImageSeen:
    """What the driver keeps of a decoded image: its size, window and thumbnail (no pixels)."""

    rows: int
    cols: int
    view: PipelineVoi
    preview: Preview

    @classmethod
    def of(cls, radiograph: Radiograph) -> "ImageSeen":
        return cls(radiograph.rows, radiograph.cols, PipelineVoi.of(radiograph), Preview.of(radiograph.pixels))


@dataclass(frozen=True)
class ImageResult:
    """One image back from Ray: decoded and scored by every member, or failed, or its study
    deferred by the deadline (then ``path`` is ``None`` and the row stands for the study)."""

    study: str
    path: Path | None
    failure: TaskFailure | None = None
    seen: ImageSeen | None = None
    outputs: dict[str, MemberOutput] | None = None

    @property
    def deferred(self) -> bool:
        return self.path is None


def _decode_studies(batch: dict[str, np.ndarray], *, timeout_s: float | None,
                    deadline_epoch: float | None) -> dict[str, np.ndarray]:
    """Decode a batch of studies (a Ray Data task): each image in a child process with the
    timeout; a study not started by the deadline comes back as one deferred row."""
    studies: list[StudyTask] = list(batch["item"])
    owner = {task.path: study.study for study in studies for task in study.images}
    deferred: list[str] = []

    def started() -> Iterator[DecodeTask]:
        for study in studies:
            if deadline_epoch is not None and time.time() >= deadline_epoch:
                deferred.append(study.study)
                continue
            yield from study.images

    results: list[ImageResult] = []
    images: list[Radiograph | None] = []
    for outcome in run_tasks(decode_one, started(), workers=1, timeout_s=timeout_s):
        radiograph = outcome.result
        seen = ImageSeen.of(radiograph) if radiograph is not None else None
        results.append(ImageResult(owner[outcome.item.path], outcome.item.path, outcome.failure, seen))
        images.append(radiograph)
    for study_uid in deferred:
        results.append(ImageResult(study_uid, None))
        images.append(None)
    # "decoded" says which rows hold an image: a column of None alone would come back as NaNs
    return {"result": _objects(results), "image": _objects(images),
            "decoded": np.array([image is not None for image in images], dtype=bool)}


def _member_column(name: str) -> str:
    return f"member:{name}"


class _MemberActor:
    """One member loaded once in a Ray actor; scores the decoded images of each batch."""

    def __init__(self, site: SiteConfig, name: str, device: str | None, batch_size: int | None,
                 threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        config = next(m for m in site.members if m.name == name)
        self.loaded = load_member(site, config, device=device, batch_size=batch_size)
        self.column = _member_column(name)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = list(batch["image"])
        present = [int(index) for index in np.flatnonzero(batch["decoded"])]
        outputs = self.loaded.member.predict([images[i].pixels for i in present]) if present else []
        column: list[MemberOutput | None] = [None] * len(images)
        for index, output in zip(present, outputs):
            column[index] = output
        return {**batch, self.column: _objects(column)}


def _collect(batch: dict[str, np.ndarray], *, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each row's result with its members' outputs; the pixels stay behind."""
    results = []
    for index, result in enumerate(batch["result"]):
        if result.seen is not None:
            outputs = {name: batch[_member_column(name)][index] for name in names}
            result = ImageResult(result.study, result.path, result.failure, result.seen, outputs)
        results.append(result)
    return {"result": _objects(results)}


def check_fits(settings: RayResources, members: int) -> None:
    """Refuse a placement the cluster cannot hold (Ray would wait for it forever): every member's
    actors, plus one decode task, must fit in the cluster's CPUs and GPUs.

    Raises:
        ConfigError: naming the keys to change.
    """
    import ray

    have = ray.cluster_resources()
    actors = members * settings.actors_per_member
    cpus = actors * settings.member_cpus + settings.decode_cpus
    gpus = actors * settings.member_gpus
    if cpus > have.get("CPU", 0.0) + 1e-9:
        raise ConfigError(
            f"[ray] asks for {cpus:g} CPUs ({actors} member actors x member_cpus {settings.member_cpus:g} + "
            f"decode_cpus {settings.decode_cpus:g}) but the Ray cluster has {have.get('CPU', 0.0):g}: lower "
            "member_cpus or actors_per_member, or add nodes")
    if gpus > have.get("GPU", 0.0) + 1e-9:
        raise ConfigError(
            f"[ray] asks for {gpus:g} GPUs ({actors} member actors x member_gpus {settings.member_gpus:g}) but the "
            f"Ray cluster has {have.get('GPU', 0.0):g}: lower member_gpus (0.5 lets two members share a card) or "
            "actors_per_member, or add GPU nodes")


def night_dataset(plans: Sequence[StudyPlan], site: SiteConfig, *, policy: PixelPolicy, device: str | None,
                  batch_size: int, deadline_epoch: float | None) -> "ray.data.Dataset":
    """The night's Ray Data pipeline over ``plans``: decode tasks, one actor pool per member,
    then each row's result (see :func:`ray_scored`)."""
    import ray.data

    settings = site.ray
    names = tuple(m.name for m in site.members)
    check_fits(settings, len(names))
    tasks = [StudyTask(p.study_instance_uid, tuple(DecodeTask(i.path, policy) for i in p.images)) for p in plans]
    dataset = _dataset(tasks).map_batches(
        partial(_decode_studies, timeout_s=site.run.decode_timeout_s, deadline_epoch=deadline_epoch),
        batch_size=settings.studies_per_task, batch_format="numpy", num_cpus=settings.decode_cpus,
        memory=settings.decode_memory_mb * 2**20)
    threads = max(1, int(settings.member_cpus))
    for member in site.members:
        dataset = dataset.map_batches(
            _MemberActor, fn_constructor_kwargs={"site": site, "name": member.name, "device": device,
                                                 "batch_size": batch_size, "threads": threads},
            batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=settings.actors_per_member),
            num_cpus=settings.member_cpus, num_gpus=settings.member_gpus or None)
    return dataset.map_batches(partial(_collect, names=names), batch_format="numpy", num_cpus=settings.decode_cpus)


def ray_scored(plans: Sequence[StudyPlan], site: SiteConfig, *, policy: PixelPolicy, device: str | None,
               batch_size: int, deadline_epoch: float | None) -> Iterator[ImageResult]:
    """Decode and score ``plans`` on Ray; one :class:`ImageResult` per image (or per deferred
    study), in the studies' order.

    Raises:
        ConfigError: the ``[ray]`` placement does not fit the cluster.
    """
    if not plans:
        return
    dataset = night_dataset(plans, site, policy=policy, device=device, batch_size=batch_size,
                            deadline_epoch=deadline_epoch)
    for row in dataset.iter_rows():
        yield row["result"]


# -- the writers: Ray tasks ---------------------------------------------------------------------


class RayWriters:
    """Finishes studies as Ray tasks (``decode_cpus`` each), at most ``4 x`` the cluster's
    CPUs in flight; results in submission order. A task's own exception comes back as the
    study's result (a node that dies is Ray's to retry: ``max_retries``)."""

    def __init__(self, settings: RayResources) -> None:
        import ray

        self._remote = ray.remote(write_study).options(num_cpus=settings.decode_cpus, max_retries=WRITE_RETRIES)
        self._limit = max(4, 4 * int(ray.cluster_resources().get("CPU", 1.0)))
        self._pending: deque[tuple[str, Any]] = deque()

    def submit(self, key: str, job: StudyJob) -> None:
        import ray

        if len(self._pending) >= self._limit:
            ray.wait([self._pending[0][1]], num_returns=1)
        self._pending.append((key, self._remote.remote(job)))

    def finished(self, *, wait: bool) -> list[tuple[str, StudyWritten | BaseException]]:
        import ray

        done: list[tuple[str, StudyWritten | BaseException]] = []
        while self._pending:
            key, ref = self._pending[0]
            if not wait and not ray.wait([ref], num_returns=1, timeout=0)[0]:
                break
            self._pending.popleft()
            try:
                done.append((key, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the task's own exception, as raised there
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                done.append((key, cause))
            except Exception as exc:  # noqa: BLE001 - the task was lost (its node died past its retries)
                done.append((key, exc))
        return done

    def close(self) -> None:
        import ray

        for _, ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()
