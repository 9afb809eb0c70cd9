"""Credentials a flow run reads from Prefect blocks, so that a deployment's
parameters name a block, never a password."""

from __future__ import annotations

import os

from pipelines.lake import LakeError
from pipelines.secrets import first_line


def password_from_secret(name: str | None) -> None:
    """The lake catalog's password from the Prefect Secret block `name`, into
    PGPASSWORD for libpq (this process opens the lake)."""
    if not name:
        return
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:  # no such block (or not a Secret)
        raise LakeError(f"no Prefect Secret block {name!r} for the lake's password: {first_line(str(exc))}") from None
    os.environ["PGPASSWORD"] = str(value)
