"""The Open Inference Protocol over gRPC (`grpc.aio`), beside the REST API.

`converters` turns protobuf messages into the protocol's transport-neutral requests
(`forestflow.api.openinference`) and back, `servicer` answers the six RPCs, `interceptors`
check bearer tokens and map errors to status codes once, and `server` runs it all.
"""
