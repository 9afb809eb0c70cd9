"""Flows whose parameters Prefect stores without credentials.

Prefect records every flow run's parameters in its database and shows them
in its UI. A base URL may carry a key (`https://user:pass@host/v1`,
`?api-key=...`), in `base_url` or inside a corpus's `configs`: the stored
copy is scrubbed, while the flow itself runs with the values it was given.
(A deployment's own default parameters are stored as given, so the CLI
refuses such URLs for `serve`: keys come from the environment there.)
"""

from __future__ import annotations

from typing import Any

from prefect import Flow

from pipelines.secrets import redact


def scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: scrubbed(v) for k, v in value.items()}
    return value


class RedactingFlow(Flow):
    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return scrubbed(super().serialize_parameters(parameters))


def flow(**options):
    """`prefect.flow` with parameters stored scrubbed."""
    return lambda fn: RedactingFlow(fn, **options)
