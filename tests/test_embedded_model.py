"""The embedded models: assembled from their packages once, checked against
the published size and SHA-256, refused when they do not match."""

from __future__ import annotations

import hashlib
import sys

import pytest

from pipelines.llm import embedded
from pipelines.llm.base import LLMConfigError


def _fake_model(tmp_path, monkeypatch, slices: list[bytes], published: bytes) -> embedded.EmbeddedModel:
    """An embedded model whose slices live in importable packages, like the real one's."""
    root = tmp_path / "site"
    for i, data in enumerate(slices, 1):
        package = root / f"fake_model_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("LONGSUM_HOME", str(tmp_path / "home"))
    return embedded.EmbeddedModel(
        name="fake", file_name="fake.gguf", size=len(published), sha256=hashlib.sha256(published).hexdigest(),
        parts=tuple(f"fake_model_part{i}" for i in range(1, len(slices) + 1)), install_hint="pip install fake",
    )


def test_slices_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    model = _fake_model(tmp_path, monkeypatch, [b"GGUF-one-", b"two-", b"three"], b"GGUF-one-two-three")
    path = embedded.model_path(model)
    assert path.read_bytes() == b"GGUF-one-two-three"
    assert path.parent == tmp_path / "home" / "models"


@pytest.mark.parametrize("slices, why", [
    ([b"GGUF-one-", b"two-", b"thre"], "bytes, not the published"),  # a truncated slice
    ([b"GGUF-one-", b"two-", b"threE"], "SHA-256"),  # same size, one byte changed
])
def test_a_file_that_is_not_the_published_one_is_refused_and_never_kept(tmp_path, monkeypatch, slices, why):
    model = _fake_model(tmp_path, monkeypatch, slices, b"GGUF-one-two-three")
    with pytest.raises(LLMConfigError, match=why) as refused:
        embedded.model_path(model)
    assert "\n" not in str(refused.value) and "refused" in str(refused.value)
    assert not list((tmp_path / "home" / "models").iterdir())  # nothing half-written is left to load


def test_a_missing_slice_package_says_how_to_install_it(tmp_path, monkeypatch):
    model = _fake_model(tmp_path, monkeypatch, [b"a", b"b"], b"ab")
    missing = embedded.EmbeddedModel(**{**model.__dict__, "parts": (*model.parts, "fake_model_part_absent")})
    with pytest.raises(LLMConfigError, match="not installed .*pip install fake"):
        embedded.model_path(missing)


def test_the_default_is_qwen_byte_for_byte():
    """The assembled default is the file Qwen publishes (hashed in full here, not trusted from the marker)."""
    path = embedded.model_path(embedded.DEFAULT)
    assert embedded.DEFAULT is embedded.QWEN and path.name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    assert (path.stat().st_size, digest.hexdigest()) == (embedded.QWEN.size, embedded.QWEN.sha256)


def test_specs_name_the_embedded_models():
    from pipelines.llm import is_tiny_model
    from pipelines.llm.llamacpp import model_file

    assert model_file(None)[1] is embedded.QWEN
    assert model_file("gemma-3-270m")[1] is embedded.GEMMA and model_file("gemma")[1] is embedded.GEMMA
    assert is_tiny_model("llamacpp:gemma-3-270m") and not is_tiny_model("llamacpp")
    assert not is_tiny_model("openai:gpt-4o-mini")
    with pytest.raises(LLMConfigError, match="embedded models: qwen2.5-coder-1.5b-instruct, gemma-3-270m"):
        model_file("no-such-model")


def test_the_default_spec_follows_longsum_model(tmp_path):
    import subprocess

    probe = "from pipelines.defaults import DEFAULT_MODEL; print(DEFAULT_MODEL)"
    env = {"PATH": "/usr/bin:/bin", "LONGSUM_MODEL": "openai:gpt-4o-mini"}
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "openai:gpt-4o-mini"
    env.pop("LONGSUM_MODEL")
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "llamacpp"
