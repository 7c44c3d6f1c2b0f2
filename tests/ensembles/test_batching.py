"""The out-of-memory fallback: a member's batch halves and runs again, down to one image.

On a CPU the allocation error is injected: the model's forward raises torch's CUDA
out-of-memory error when given more images than fit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ensembles.batching import AdaptiveBatches, MemberOutOfMemoryError, batch_shrinks  # noqa: E402
from ensembles.registry import create_member  # noqa: E402


def _oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_a_batch_that_does_not_fit_is_halved_and_the_smaller_size_kept() -> None:
    seen: list[int] = []

    def step(chunk: Sequence[int]) -> list[int]:
        seen.append(len(chunk))
        if len(chunk) > 3:
            raise _oom()
        return [item * 10 for item in chunk]

    batches = AdaptiveBatches(16)
    assert batches.run(list(range(10)), step, owner="pg-det") == [i * 10 for i in range(10)]
    assert seen == [10, 8, 4, 2, 2, 2, 2, 2]  # 10 at 16, 8 at 8, 4 at 4 fail; then five pairs
    assert batches.size == 2
    assert [(s.member, s.from_size, s.to_size) for s in batches.shrinks] == [("pg-det", 16, 8), ("pg-det", 8, 4),
                                                                           ("pg-det", 4, 2)]
    assert "Tried to allocate 2.00 GiB" in batches.shrinks[0].error
    assert batches.run([1, 2, 3], step, owner="pg-det") == [10, 20, 30]  # the next call starts small
    assert seen[-2:] == [2, 1] and len(batches.shrinks) == 3


def test_one_image_that_does_not_fit_names_the_member_and_the_fix() -> None:
    def step(chunk: Sequence[int]) -> list[int]:
        raise _oom()

    batches = AdaptiveBatches(2)
    with pytest.raises(MemberOutOfMemoryError, match=r"member 'detr' ran out of device memory with a batch of 1 "
                                                     r"image .*device = \"cuda:1\""):
        batches.run([1, 2], step, owner="detr")
    assert [(s.from_size, s.to_size) for s in batches.shrinks] == [(2, 1)]


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def step(chunk: Sequence[int]) -> list[int]:
        calls.append(len(chunk))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveBatches(4).run([1, 2, 3, 4], step, owner="m")
    assert calls == [4]


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ensembles.demo_arch.detr import write_tiny_detr_checkpoint
    from ensembles.demo_arch.paligemma import write_tiny_paligemma_checkpoint

    root = tmp_path_factory.mktemp("oom-members")
    write_tiny_paligemma_checkpoint(root / "paligemma-classifier", "paligemma-classifier", name="c", seed=1)
    write_tiny_detr_checkpoint(root / "detr", name="detr", seed=3)
    return {path.name: path for path in root.iterdir()}


def test_both_paligemma_kinds_batch_through_the_shared_predict() -> None:
    """The detector and the classifier only score a batch (``_predict_batch``); their batching is
    ``PaliGemmaMemberBase.predict``, tested below through the classifier."""
    from ensembles.members.paligemma_classifier import PaliGemmaClassifier
    from ensembles.members.paligemma_common import PaliGemmaMemberBase
    from ensembles.members.paligemma_detector import PaliGemmaDetector

    assert "predict" in vars(PaliGemmaMemberBase)
    assert "predict" not in vars(PaliGemmaDetector) and "predict" not in vars(PaliGemmaClassifier)


@pytest.mark.parametrize("kind", ["paligemma-classifier", "detr"])
def test_every_member_kind_falls_back_to_smaller_batches(members: dict[str, Path], kind: str) -> None:
    """The same images give the same scores through an injected out-of-memory at batch > 1."""
    member: Any = create_member(kind, members[kind], device="cpu", batch_size=4)
    member.name = "site-name"
    rng = np.random.default_rng(0)
    images = [rng.random((40 + 8 * i, 48), dtype=np.float32) for i in range(3)]
    expected = [o.score for o in member.predict(images)]
    assert batch_shrinks(member) == []

    model = member.model
    forward = model.forward
    sizes: list[int] = []

    @functools.wraps(forward)  # generate() reads the forward's signature
    def tight_forward(*args: Any, **kwargs: Any) -> Any:
        pixels = kwargs.get("pixel_values")
        if pixels is not None:  # generation's later steps carry no pixels
            sizes.append(int(pixels.shape[0]))
            if pixels.shape[0] > 1:
                raise _oom()
        return forward(*args, **kwargs)

    model.forward = tight_forward
    try:
        outputs = member.predict(images)
    finally:
        del model.forward
    assert [o.score for o in outputs] == pytest.approx(expected, abs=1e-5)  # oneDNN may differ per batch shape
    assert sizes == [3, 2, 1, 1, 1]  # 3 of 4 and 2 of 2 run out of memory, then one at a time
    shrinks = batch_shrinks(member)
    assert [(s.member, s.from_size, s.to_size) for s in shrinks] == [("site-name", 4, 2), ("site-name", 2, 1)]


def test_a_wrapped_member_reports_the_halvings_of_the_member_it_holds() -> None:
    """A refiner stage (``RefinedMember``) holds the detector as ``.member``: its halvings count."""
    from types import SimpleNamespace

    inner = SimpleNamespace(batches=AdaptiveBatches(2))
    inner.batches.run([1, 2], lambda chunk: [0] if len(chunk) == 1 else (_ for _ in ()).throw(_oom()), owner="det")
    assert [(s.from_size, s.to_size) for s in batch_shrinks(SimpleNamespace(member=inner))] == [(2, 1)]
    assert batch_shrinks(SimpleNamespace()) == []
