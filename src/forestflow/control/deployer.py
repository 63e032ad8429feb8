"""Deploying: artifact copies fetched, verified and loaded, and unloaded again.

Fetches may take minutes (a slow remote): they run on threads of their own, at most
`fetch_workers` at once, so they never hold up the store, model loads or commands.
Each copy's content digest is taken as it is fetched; a copy found missing or damaged
later is fetched again and must match the digest recorded at deploy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.cache import ArtifactCache
from forestflow.artifacts.digest import artifact_digest
from forestflow.control.runner import ServableRunner
from forestflow.control.serve_request import ServeRequest
from forestflow.control.state import ServableRecord
from forestflow.domain.fqrv import FQRV
from forestflow.domain.signature import ModelSignature
from forestflow.errors import ArtifactChangedError
from forestflow.flavors.base import Flavor, parse_flavor

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Fetched:
    """An artifact copy in the cache: the location that names exactly what was copied
    (the requested one unless it was an alias) and the copy's content digest."""

    source: str
    digest: str


@dataclass(frozen=True, slots=True)
class Loaded:
    """A servable fetched and loaded, not yet recorded."""

    fetched: Fetched
    flavor: Flavor
    signature: ModelSignature


class Deployer:
    """Fetches artifacts into the cache and starts and stops servables on the runner."""

    def __init__(
        self,
        runner: ServableRunner,
        cache: ArtifactCache,
        storage: StorageOptions,
        *,
        fetch_workers: int = 16,
    ) -> None:
        self.runner = runner
        self.cache = cache
        self.storage = storage
        self._pool = ThreadPoolExecutor(fetch_workers, thread_name_prefix="forestflow-fetch")

    def fqrv_hint(self, location: str) -> FQRV | None:
        """The FQRV a location implies (a Git tag), if any."""
        return fetcher_for(location, self.storage).fqrv_hint(location)

    async def load(self, fqrv: FQRV, request: ServeRequest) -> Loaded:
        """Fetch the request's artifact and load it; nothing is left behind on failure."""
        location = request.artifact_location(self.storage)
        fetched = await self.fetch(fqrv, location, request.artifact_path)
        if fetched.source != request.path:
            log.info("%s resolved to %s", request.path, fetched.source)
        directory = self.cache.directory(fqrv)
        try:
            flavor = await asyncio.to_thread(request.resolve_flavor, directory)
            log.info("loading %s with flavor %s", fqrv, flavor.wire_name)
            batching = request.servable_settings.batching_settings
            signature = await self.runner.start(
                fqrv, flavor, directory, max_batch_size=batching.max_batch_size
            )
        except BaseException:
            await self._run(self.cache.remove, fqrv)
            raise
        return Loaded(fetched, flavor, signature)

    async def reload(self, servable: ServableRecord) -> ModelSignature:
        """Load a recorded servable from its verified copy."""
        flavor = parse_flavor(servable.flavor)
        await self._verify(servable)
        return await self.runner.start(
            servable.fqrv,
            flavor,
            self.cache.directory(servable.fqrv),
            max_batch_size=servable.settings.batching_settings.max_batch_size,
        )

    async def unload(self, fqrv: FQRV) -> None:
        """Stop `fqrv` and delete its copy (after a removal, or a deploy not recorded)."""
        await self.runner.stop(fqrv)
        await self._run(self.cache.remove, fqrv)

    async def remove_orphans(self, keep: Iterable[FQRV]) -> None:
        """Delete every copy no servable in `keep` owns."""
        await self._run(self.cache.remove_orphans, list(keep))

    async def fetch(self, fqrv: FQRV, source: str, artifact_path: str | None) -> Fetched:
        """Copy the artifact at `source` into the cache, atomically, and hash the copy."""
        fetcher = fetcher_for(source, self.storage)
        fetched: list[Fetched] = []

        def fill(target: Path) -> None:
            pinned = fetcher.fetch(source, artifact_path, target)
            fetched.append(Fetched(pinned or source, artifact_digest(target)))

        await self._run(self.cache.install, fqrv, fill)
        return fetched[0]

    async def _verify(self, servable: ServableRecord) -> None:
        """Make sure the local copy holds what was deployed: fetch it again from its
        source when it is missing or damaged, and refuse a source that changed."""
        fqrv = servable.fqrv
        if self.cache.has(fqrv):
            if servable.digest is None:  # recorded before digests existed
                return
            found = await self._run(artifact_digest, self.cache.directory(fqrv))
            if found == servable.digest:
                return
            log.warning("artifact copy of %s is damaged; fetching %s again", fqrv, servable.source)
        else:
            log.warning("artifact copy of %s is missing; fetching %s again", fqrv, servable.source)
        fetched = await self.fetch(fqrv, servable.source, servable.artifact_path)
        if servable.digest is not None and fetched.digest != servable.digest:
            await self._run(self.cache.remove, fqrv)
            raise ArtifactChangedError(servable.source, servable.digest, fetched.digest)

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args))

    def close(self) -> None:
        """Stop the fetch threads; fetches not started are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)
