"""Loaded models kept out of the cyclic garbage collector's way.

A full collection walks every object the collector tracks: with scikit-learn, pandas and
a model loaded that is some 200,000 objects and over 100 ms in which no request is
answered, the tail of the latency distribution (docs/performance.md). What is alive once
a model has loaded (the libraries and the model) lives as long as the servable, so it is
frozen (`gc.freeze`): collections then walk only what requests create. When a model is
closed everything is unfrozen, so that the next full collection can free whatever cycles
the model leaves behind, and it is frozen again right after that collection.

A serving process also collects its youngest generation less often than Python does
(`collect_less_often`): after 10,000 more container objects were made than freed, not 700.
Shadow requests wait in queues for a call of up to hundreds, with their callbacks and
prediction events, so the count of objects alive swings by a few thousand with every
batch: at 700, two scored shadows per request set off a collection every ~30 requests,
each walking every queued request, about 17 µs of CPU per request in all (measured in
process), served throughput 4% lower in a side-by-side run (docs/performance.md). Requests
leave little cyclic garbage (a failed one about a hundred small objects, never its body),
so the higher threshold holds back a few megabytes at most.
"""

from __future__ import annotations

import gc
from typing import Any

OLDEST = 2
YOUNG_THRESHOLD = 10_000
"""Container objects made (net of those freed) that set off a young collection."""


class _Heap:
    def __init__(self) -> None:
        self.refreeze = False
        self.watching = False

    def after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == OLDEST and self.refreeze:
            self.refreeze = False
            gc.freeze()


_heap = _Heap()


def collect_less_often() -> None:
    """Raise the youngest generation's threshold to `YOUNG_THRESHOLD` (see the module doc);
    the older generations' stay as they are."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)


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
