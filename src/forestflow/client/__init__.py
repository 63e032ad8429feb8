"""A Python client for a ForestFlow server: `Client` (synchronous) and `AsyncClient` (asyncio).

```python
from forestflow.client import Client

with Client("http://127.0.0.1:8090", token="ff_...") as client:  # or $FORESTFLOW_URL/TOKEN
    client.create_contract("samples/energy_output/0")
    prediction = client.score("samples/energy_output/0", [{"TemperatureCelcius": 14.96, ...}])
```

The server's errors are raised as their own classes, from `forestflow.errors`
(`UnknownServable`, `PermissionDenied`, …); see docs/cli.md.
"""

from __future__ import annotations

from forestflow.client._answers import (
    ContractSettings,
    CreatedToken,
    Deployed,
    EventsMissed,
    EventsPage,
    Feature,
    FeedbackAccepted,
    HistoryEntry,
    Metadata,
    Prediction,
    PredictionEvent,
    PredictionLogStats,
    Refusal,
    Release,
    ServableMetrics,
    ServableSettings,
    SinkCounters,
    Token,
)
from forestflow.client._async import AsyncClient
from forestflow.client._names import FQRV, Contract
from forestflow.client._requests import (
    BasicServeRequest,
    MLFlowServeRequest,
    ServeRequest,
    infer_schema,
    score_body,
)
from forestflow.client._sync import Client
from forestflow.client._transport import (
    DEFAULT_URL,
    TOKEN_VARIABLE,
    URL_VARIABLE,
    ClientError,
    NoAnswer,
    UnexpectedAnswer,
)

__all__ = [
    "DEFAULT_URL",
    "FQRV",
    "TOKEN_VARIABLE",
    "URL_VARIABLE",
    "AsyncClient",
    "BasicServeRequest",
    "Client",
    "ClientError",
    "Contract",
    "ContractSettings",
    "CreatedToken",
    "Deployed",
    "EventsMissed",
    "EventsPage",
    "Feature",
    "FeedbackAccepted",
    "HistoryEntry",
    "MLFlowServeRequest",
    "Metadata",
    "NoAnswer",
    "Prediction",
    "PredictionEvent",
    "PredictionLogStats",
    "Refusal",
    "Release",
    "ServableMetrics",
    "ServableSettings",
    "ServeRequest",
    "SinkCounters",
    "Token",
    "UnexpectedAnswer",
    "infer_schema",
    "score_body",
]
