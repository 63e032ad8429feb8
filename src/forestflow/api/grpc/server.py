"""`OpenInferenceGrpcServer`: the protocol's gRPC service on its own port, in the app's loop."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc.aio

from forestflow.api.grpc._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from forestflow.api.grpc.interceptors import AuthInterceptor, ErrorInterceptor
from forestflow.api.grpc.servicer import PERMISSIONS, OpenInferenceServicer
from forestflow.api.openinference.models import ModelCatalog
from forestflow.api.rest.auth import Guard
from forestflow.control.plane import ControlPlane
from forestflow.serving.inference import InferenceService

log = logging.getLogger(__name__)

DEFAULT_PORT = 8091
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class OpenInferenceGrpcServer:
    """Serves `inference.GRPCInferenceService` over the same catalog as the REST routes.

    `guard` checks bearer tokens as it does for REST (off when it has no tokens).
    `require_ready` raises `ServiceUnavailableError` until the server has recovered its
    state. Start and stop it from the event loop the app runs in.
    """

    def __init__(
        self,
        control: ControlPlane,
        inference: InferenceService,
        guard: Guard,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        require_ready: Callable[[], None] = lambda: None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._catalog = ModelCatalog(control, inference)
        self._guard = guard
        self._host = f"[{host}]" if ":" in host else host
        self._address = f"{self._host}:{port}"
        self._require_ready = require_ready
        self._max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        """The bound port once started."""

    async def start(self) -> None:
        """Bind and start serving; OSError when the address cannot be bound."""
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor(), AuthInterceptor(self._guard, PERMISSIONS)],
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            OpenInferenceServicer(self._catalog, self._require_ready), server
        )
        try:
            port = server.add_insecure_port(self._address)
        except RuntimeError as error:
            raise OSError(f"cannot listen for gRPC on {self._address}: {error}") from None
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {self._address}")
        await server.start()
        self._server = server
        self.port = port
        log.info("Open Inference Protocol over gRPC on %s:%d", self._host, port)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls; let running ones finish within `grace` seconds."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
