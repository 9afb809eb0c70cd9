"""What a served flow run may touch: deployment parameters are untrusted input.

Anyone who can reach the Prefect API can start a deployment with parameters
of their choosing: `path=/etc/shadow` and `base_url=http://their-host/v1`
would send the file's text to them, and `db`, `export_dir` or `report` could
write wherever the serve process may. So `summarize serve` states what its
flow runs may do (`ServePolicy`):

* read documents (and local model files) only under its roots (by default
  SOURCE, the folder or file it evaluates);
* call only its base URLs (by default those of its configurations; a spec's
  provider without a base URL is that provider's official endpoint);
* write only into its folder (by default the database's folder), the
  database, Parquet exports and reports alike;
* use only its Dask scheduler, if any.

The policy travels to the flow-run processes in the environment of the serve
process (LONGSUM_SERVE_POLICY), which a flow run's parameters cannot change.
`check_run` is called by every longsum flow while Prefect validates a run's
parameters (flows.redacting), so a run that leaves the policy fails before
its flow starts: nothing is read, sent or written, and the run's state says
which parameter was refused. Paths are compared after resolving symlinks and
`..`; URLs by scheme, host, port and path, without credentials. Without a
policy (the CLI's `summarize corpus`, a flow called from Python) nothing is
checked: the caller is the user.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

POLICY_ENV = "LONGSUM_SERVE_POLICY"
# The endpoint an API backend calls when no base URL is given.
OFFICIAL_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
READ_KEYS = ("path", "source")
WRITE_KEYS = ("db", "export_dir", "report")


class ParameterRefused(ValueError):
    """A served flow run's parameter leaves what `summarize serve` allows."""


@dataclass(frozen=True)
class ServePolicy:
    read_roots: tuple[str, ...]
    base_urls: tuple[str, ...]
    write_dir: str
    dask_address: str | None = None
    models: tuple[str, ...] = field(default=())  # llamacpp:PATH specs configured by serve
    lakes: tuple[str, ...] = field(default=())  # the lake (ducklake:...) serve writes, when it writes one

    @classmethod
    def build(cls, read_roots, base_urls, write_dir, dask_address=None, models=(), lakes=()) -> "ServePolicy":
        return cls(
            read_roots=tuple(dict.fromkeys(str(_resolved(r)) for r in read_roots)),
            base_urls=tuple(dict.fromkeys(u for u in (endpoint_url(None, url) for url in base_urls) if u)),
            write_dir=str(_resolved(write_dir)), dask_address=dask_address, models=tuple(models),
            lakes=tuple(lakes),
        )

    def install(self) -> None:
        """Hand the policy to the flow runs this process will start."""
        os.environ[POLICY_ENV] = json.dumps(asdict(self))

    @classmethod
    def installed(cls) -> "ServePolicy | None":
        raw = os.environ.get(POLICY_ENV)
        if not raw:
            return None
        data = json.loads(raw)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def describe(self) -> list[str]:
        return [
            f"reads documents under: {', '.join(self.read_roots)}",
            f"calls: {', '.join(self.base_urls) or 'no API (local models only)'}",
            f"writes into: {self.write_dir}",
            *([f"Dask scheduler: {self.dask_address}"] if self.dask_address else []),
        ]

    # -- the checks ------------------------------------------------------------

    def check(self, flow: str, parameters: dict[str, Any]) -> None:
        """Raise ParameterRefused naming the first parameter that leaves the policy."""
        for where, values in _settings(parameters):
            self._check_settings(flow, where, values)
        if "dask_address" in parameters and parameters["dask_address"] not in (None, self.dask_address):
            raise self._refused(flow, "dask_address", "is not the Dask scheduler this deployment serves with")
        # The database a run without `db` writes: the default one.
        if parameters.get("db") is None:
            from pipelines.paths import default_db

            self._check_write(flow, "db (default)", str(default_db()))

    def _check_settings(self, flow: str, where: str, values: dict[str, Any]) -> None:
        for key in READ_KEYS:
            if isinstance(values.get(key), str):
                self._check_read(flow, f"{where}{key}", values[key])
        for key in WRITE_KEYS:
            if isinstance(values.get(key), str):
                self._check_write(flow, f"{where}{key}", values[key])
        for key, value in values.items():
            if key.endswith("base_url") and value:  # used or not, a base URL given must be allowed
                self._check_url(flow, f"{where}{key}", endpoint_url(None, str(value)))
            elif (key == "model" or key.endswith("_model")) and isinstance(value, str):
                self._check_model(flow, where, key, value, values.get(f"{key[: -len('model')]}base_url"))

    def _check_model(self, flow: str, where: str, key: str, spec: str, base_url) -> None:
        from pipelines.llm import parse_spec

        try:
            backend, name = parse_spec(spec)
        except Exception as exc:  # noqa: BLE001 - an unknown spec is refused, not run
            raise self._refused(flow, f"{where}{key}", f"is not a model spec ({exc})") from None
        if backend == "llamacpp":  # a model file is read like a document; a packaged model's name is not a path
            if name and spec not in self.models and _is_path(name):
                self._check_read(flow, f"{where}{key}", name)
        elif not base_url:  # the provider's own endpoint
            self._check_url(flow, f"{where}{key} (no base URL: {endpoint_url(backend, None)})",
                            endpoint_url(backend, None))

    def _check_url(self, flow: str, name: str, url: str | None) -> None:
        if url is None or url not in self.base_urls:
            raise self._refused(flow, name, f"is not a base URL this deployment may call "
                                            f"({', '.join(self.base_urls) or 'none'})")

    def _check_read(self, flow: str, name: str, value: str) -> None:
        if not self._readable(_resolved(value)):
            raise self._refused(flow, name, f"is outside the folders this deployment may read "
                                            f"({', '.join(self.read_roots)})")
        # A corpus folder is read file by file: a link in it must not lead out (only names are listed here).
        folder = Path(value).expanduser()
        if folder.is_dir():
            for entry in folder.iterdir():
                if not self._readable(entry.resolve()):
                    raise self._refused(flow, name, f"holds {entry.name!r}, a link to outside the folders this "
                                                    f"deployment may read")

    def _readable(self, path: Path) -> bool:
        return any(path == Path(root) or path.is_relative_to(root) for root in self.read_roots)

    def _check_write(self, flow: str, name: str, value: str) -> None:
        if value.startswith("ducklake:"):  # a lake: only the one this deployment serves
            from pipelines.lake import Lake

            if Lake.parse(value).spec not in self.lakes:
                raise self._refused(flow, name, "is a lake this deployment does not write")
            return
        path = _resolved(value)
        if not path.is_relative_to(self.write_dir):
            raise self._refused(flow, name, f"is outside the folder this deployment may write into ({self.write_dir})")

    @staticmethod
    def _refused(flow: str, name: str, why: str) -> ParameterRefused:
        return ParameterRefused(f"{flow}: parameter {name} {why}; refused before reading, sending or writing "
                                f"anything (see `summarize serve --help` to allow more)")


def check_run(flow: str, parameters: dict[str, Any]) -> None:
    """The installed serve policy's check; nothing without one."""
    policy = ServePolicy.installed()
    if policy is not None:
        policy.check(flow, parameters)


def endpoint_url(backend: str | None, base_url: str | None) -> str | None:
    """The URL a backend calls, as compared: without credentials or trailing
    slash, scheme and host lower-cased; None as the provider's official one."""
    from pipelines.secrets import public_url

    if not base_url:
        return OFFICIAL_URLS.get(backend or "")
    url = public_url(base_url)
    return url if url and "://" in url else None


def _settings(parameters: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """The run's own parameters, then each configuration of a corpus."""
    yield "", parameters
    configs = parameters.get("configs")
    if isinstance(configs, list):
        for i, config in enumerate(configs):
            if isinstance(config, dict):
                yield f"configs[{i}].", config


def _is_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.startswith((".", "~")) or name.lower().endswith(".gguf")


def _resolved(value: str | os.PathLike) -> Path:
    return Path(value).expanduser().resolve()
