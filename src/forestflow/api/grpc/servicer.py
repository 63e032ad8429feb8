"""`GRPCInferenceService`: the six RPCs, each parsing, calling the catalog and formatting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

from forestflow import __version__
from forestflow.api.grpc._generated import grpc_predict_v2_pb2 as pb
from forestflow.api.grpc._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from forestflow.api.grpc.converters import infer_request, infer_response, metadata_response
from forestflow.api.openinference.errors import is_ready_now
from forestflow.api.openinference.models import ModelCatalog
from forestflow.domain.roles import Permission

SERVICE = "inference.GRPCInferenceService"
PERMISSIONS: dict[str, Permission | None] = {
    f"/{SERVICE}/ServerLive": None,
    f"/{SERVICE}/ServerReady": None,
    f"/{SERVICE}/ServerMetadata": Permission.READ,
    f"/{SERVICE}/ModelReady": Permission.READ,
    f"/{SERVICE}/ModelMetadata": Permission.READ,
    f"/{SERVICE}/ModelInfer": Permission.SCORE,
}
"""What each RPC needs, as the REST routes: health open, metadata READ, inference SCORE."""

Context: TypeAlias = Any
"""A `grpc.aio.ServicerContext` (grpc ships no type hints)."""


class OpenInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs over the catalog; errors are mapped by `ErrorInterceptor`."""

    def __init__(self, catalog: ModelCatalog, require_ready: Callable[[], None]) -> None:
        self._catalog = catalog
        self._require_ready = require_ready

    async def ServerLive(  # noqa: N802 - the protocol's method names
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        """Always live while it answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        """Ready once the server has recovered its state."""
        return pb.ServerReadyResponse(ready=is_ready_now(self._require_ready))

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        """Name and version (no extensions: binary tensor data is a REST extension)."""
        return pb.ServerMetadataResponse(name="forestflow", version=__version__)

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """A release: loaded. A contract: some release takes traffic. NOT_FOUND if unknown."""
        self._require_ready()
        return pb.ModelReadyResponse(ready=self._catalog.ready(request.name, request.version))

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """Inputs and outputs of the release, or of the contract's main release."""
        self._require_ready()
        return metadata_response(self._catalog.metadata(request.name, request.version))

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """Score on the release, or on the contract through its router."""
        self._require_ready()
        decoded = infer_request(request)
        result = await self._catalog.infer(request.model_name, request.model_version, decoded)
        return infer_response(result, request.id)
