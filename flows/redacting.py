"""Flows whose parameters Prefect stores without credentials.

Prefect records every flow run's parameters in its database and shows them
in its UI. A base URL may carry a key (`https://user:pass@host/v1`,
`?api-key=...`), in `base_url` or inside a corpus's `configs`: the stored
copy is scrubbed, while the flow itself runs with the values it was given.
(A deployment's own default parameters are stored as given, so
`flows.deploy.build_deployments` refuses such values: keys come from the
environment there.)

What else a flow run sends Prefect is redacted where it leaves: every log
record of the process (`redact_log_records`, installed on import), and the
exception a failed run ends with, whose message becomes the run's state
message (scrubbed in place, its type kept, before Prefect reads it).

A flow run started by `summarize serve` has its parameters checked against
what serve was told it may read, call and write (`flows.guard`) before it
runs: Prefect fails it with the reason, and nothing was read, sent or written.
"""

from __future__ import annotations

import functools
from typing import Any

from prefect import Flow

from pipelines.secrets import redact, redact_log_records

redact_log_records()


def scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: scrubbed(v) for k, v in value.items()}
    return value


def scrub_exception(exc: BaseException) -> BaseException:
    """The exception with credentials masked in its string arguments (and in
    those of its causes), in place: callers still catch it by its type."""
    seen: set[int] = set()
    link = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        try:
            if any(isinstance(a, str) and redact(a) != a for a in link.args):
                link.args = tuple(redact(a) if isinstance(a, str) else a for a in link.args)
        except Exception:  # noqa: BLE001 - an exception that refuses new args keeps them
            pass
        link = link.__cause__ or link.__context__
    return exc


def _scrubbing(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            scrub_exception(exc)
            raise

    return run


class RedactingFlow(Flow):
    def __init__(self, fn, **options):
        super().__init__(fn, **options)
        self.fn = _scrubbing(fn)  # after Prefect read the function's file, name and signature

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return scrubbed(super().serialize_parameters(parameters))

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Prefect's validation, then the serve policy's (when this process
        serves deployments): a refused run fails here, before the flow runs."""
        from flows.guard import check_run

        validated = super().validate_parameters(parameters)
        check_run(self.name, validated)
        return validated


def flow(**options):
    """`prefect.flow` with parameters stored scrubbed."""
    return lambda fn: RedactingFlow(fn, **options)
