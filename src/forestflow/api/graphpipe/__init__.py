"""GraphPipe (flatbuffers over HTTP), as the original ForestFlow served it (issue 10, scope 4)."""

from forestflow.api.graphpipe.rest import build_graphpipe_router

__all__ = ["build_graphpipe_router"]
