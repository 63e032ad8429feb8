"""The Open Inference Protocol (KServe v2): a transport over the same inference service.

`datatypes` and `codec` turn the protocol's tensors into a `Frame` and a prediction back
into tensors, `models` names contracts and releases as models and describes them, `rest`
serves the protocol's REST routes. The gRPC side is `forestflow.api.grpc`. Nothing here
imports grpc: the REST routes run without it.
"""
