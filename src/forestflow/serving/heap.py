"""Loaded models kept out of the cyclic garbage collector's way.

A full collection walks every object the collector tracks: with scikit-learn, pandas and
a model loaded that is some 200,000 objects and over 100 ms in which no request is
answered, the tail of the latency distribution (docs/performance.md). What is alive once
a model has loaded (the libraries and the model) lives as long as the servable, so it is
frozen (`gc.freeze`): collections then walk only what requests create. When a model is
closed everything is unfrozen, so that the next full collection can free whatever cycles
the model leaves behind, and it is frozen again right after that collection.
"""

from __future__ import annotations

import gc
from typing import Any

OLDEST = 2


class _Heap:
    def __init__(self) -> None:
        self.refreeze = False
        self.watching = False

    def after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == OLDEST and self.refreeze:
            self.refreeze = False
            gc.freeze()


_heap = _Heap()


def settle() -> None:
    """Freeze what is alive now: call once a model has loaded."""
    _heap.refreeze = False
    gc.freeze()


def release() -> None:
    """Unfreeze, so that the next full collection frees a closed model's cycles; what is
    alive after it is frozen again."""
    gc.unfreeze()
    _heap.refreeze = True
    if not _heap.watching:
        gc.callbacks.append(_heap.after_collection)
        _heap.watching = True
