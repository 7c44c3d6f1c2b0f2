"""Members' batches that survive a GPU running out of memory.

A night must not fail because one batch did not fit: a CUDA out-of-memory error during a
member's forward pass halves the batch and runs the same images again, down to one image at a
time. The smaller size is kept for the rest of the night (the memory that was missing stays
missing), and each halving is recorded, so the run's summary can say which member ran with a
smaller batch than configured. An image that does not fit even alone raises
:class:`MemberOutOfMemoryError`, naming the member and what to change.

Every member kind batches through :class:`AdaptiveBatches` (the PaliGemma classifier and
detector through :class:`~ensembles.members.paligemma_common.PaliGemmaMemberBase`, DETR in its
own ``predict``), so there is one implementation of the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

from ensembles.errors import EnsembleError

__all__ = ["AdaptiveBatches", "BatchShrink", "MemberOutOfMemoryError", "batch_shrinks", "is_out_of_memory"]

T = TypeVar("T")
R = TypeVar("R")


class MemberOutOfMemoryError(EnsembleError):
    """A member ran out of device memory with a batch of one image."""


@dataclass(frozen=True)
class BatchShrink:
    """One halving of a member's batch after an out-of-memory error.

    Attributes:
        member: the member's name.
        from_size: the batch size that ran out of memory.
        to_size: the batch size used from then on.
        error: the error's first line (the allocator's message: sizes, never patient data).
    """

    member: str
    from_size: int
    to_size: int
    error: str

    def as_dict(self) -> dict[str, object]:
        return {"member": self.member, "from": self.from_size, "to": self.to_size, "error": self.error}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's device out-of-memory error (``torch.OutOfMemoryError``,
    which ``torch.cuda.OutOfMemoryError`` is)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - members need torch
        return False
    return isinstance(exc, torch.OutOfMemoryError)


def _release_cached_memory() -> None:
    """Give the caching allocator's free blocks back before the smaller batch runs."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class AdaptiveBatches:
    """Runs a member's forward passes in batches, halving the batch on out-of-memory.

    Attributes:
        size: the batch size now (the configured one until a halving).
        shrinks: every halving so far, oldest first.
    """

    size: int
    shrinks: list[BatchShrink] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise EnsembleError(f"batch_size must be a positive integer, got {self.size!r}")

    def run(self, items: Sequence[T], step: Callable[[Sequence[T]], list[R]], *, owner: str) -> list[R]:
        """``step`` over consecutive chunks of ``items`` of at most :attr:`size`; the results
        concatenated in order. A chunk that runs out of device memory is run again in halves.

        Args:
            items: the images (or crops) of this call.
            step: one forward pass over a chunk, one result per item.
            owner: the member's name, for the records and the error.

        Raises:
            MemberOutOfMemoryError: a single item does not fit.
        """
        results: list[R] = []
        start = 0
        while start < len(items):
            chunk = items[start : start + self.size]
            try:
                out = step(chunk)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                self._shrink(exc, owner)
                continue
            results.extend(out)
            start += len(chunk)
        return results

    def _shrink(self, exc: BaseException, owner: str) -> None:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if self.size == 1:
            raise MemberOutOfMemoryError(
                f"member {owner!r} ran out of device memory with a batch of 1 image ({message}); "
                "give it a device of its own ([members.NAME] device = \"cuda:1\"), quantise it "
                "(quantization = \"8bit\" or \"4bit\"), or run it on the CPU (README: memory per member)"
            ) from exc
        smaller = max(1, self.size // 2)
        self.shrinks.append(BatchShrink(owner, self.size, smaller, message))
        self.size = smaller
        _release_cached_memory()


def batch_shrinks(member: object) -> list[BatchShrink]:
    """The halvings a member (or the member a wrapper such as a refiner stage holds) recorded."""
    batches = getattr(member, "batches", None)
    if isinstance(batches, AdaptiveBatches):
        return list(batches.shrinks)
    inner = getattr(member, "member", None)
    return batch_shrinks(inner) if inner is not None and inner is not member else []
