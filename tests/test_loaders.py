"""Tests of ``loaders``: the contract every registered loader passes, ImageLoader on
``memory://``, local paths and ``file://``, the decompression-bomb guard, clear errors.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from PIL import Image

import loaders
from embedders import ConfigError, LoadError, UnknownNameError
from loaders import BaseDataLoader, DataLoader, ImageLoader, TextLoader, data_loaders
from loaders.image import DEFAULT_MAX_PIXELS

HOST_OPTIONS = {"max_workers", "device", "batch_size"}


def _png(array: np.ndarray, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **save)
    return buf.getvalue()


def _put(uri: str, data: bytes) -> str:
    with fsspec.open(uri, "wb") as f:
        f.write(data)
    return uri


@pytest.fixture
def memfs() -> Iterator[str]:
    """A fresh ``memory://`` folder, removed afterwards."""
    root = f"memory://test_loaders_{os.getpid()}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)


# A sample URI per loader for the contract test.
def _sample(name: str, root: str) -> tuple[str, Any]:
    if name == "image":
        array = np.full((3, 4, 3), 200, np.uint8)
        return _put(f"{root}/sample.png", _png(array)), array
    if name == "text":
        return _put(f"{root}/sample.txt", "héllo".encode()), "héllo"
    pytest.skip(f"no sample input for loader {name!r}")


@pytest.mark.parametrize("name", data_loaders.names())
class TestDataLoaderContract:
    def test_protocol_name_and_config_round_trip(self, name: str) -> None:
        loader = loaders.build_loader(name, {})
        assert isinstance(loader, DataLoader)
        assert type(loader).name() == name
        config = loader.get_config()
        assert json.loads(json.dumps(config)) == config
        assert not HOST_OPTIONS & set(config)
        assert type(loader).build_from_config(config).get_config() == config
        with pytest.raises(ConfigError, match="unknown key 'bogus'"):
            type(loader).build_from_config({**config, "bogus": 1})

    def test_one_item_per_uri_in_order_none_passes_through(self, name: str, memfs: str) -> None:
        uri, expected = _sample(name, memfs)
        loader = loaders.build_loader(name, {}, max_workers=3)
        out = loader([uri, None, uri, uri])
        assert len(out) == 4 and out[1] is None
        for item in (out[0], out[2], out[3]):
            if isinstance(expected, np.ndarray):
                np.testing.assert_array_equal(item, expected)
            else:
                assert item == expected
        assert loader([]) == []

    def test_missing_uri_error_names_it(self, name: str, memfs: str) -> None:
        uri = f"{memfs}/does-not-exist"
        with pytest.raises(LoadError, match=f"{uri}.*no such file") as info:
            loaders.build_loader(name, {})([uri])
        assert info.value.uri == uri


# ---------------------------------------------------------------- ImageLoader
def test_image_loader_memory_local_and_file_uris(memfs: str, rgb: np.ndarray, tmp_path: Path) -> None:
    data = _png(rgb)
    local = tmp_path / "picture.png"
    local.write_bytes(data)
    uris = [_put(f"{memfs}/a.png", data), str(local), local.as_uri()]
    assert uris[2].startswith("file://")
    for image in ImageLoader()(uris):
        assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
        np.testing.assert_array_equal(image, rgb)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("RGB", "JPEG"), ("I;16", "PNG"), ("1", "BMP")],
)
def test_image_loader_converts_every_mode_to_rgb(memfs: str, mode: str, fmt: str) -> None:
    buf = io.BytesIO()
    Image.new(mode, (9, 5)).save(buf, fmt)
    (image,) = ImageLoader()([_put(f"{memfs}/x.{fmt.lower()}", buf.getvalue())])
    assert image.shape == (5, 9, 3) and image.dtype == np.uint8


def test_image_loader_applies_exif_orientation(memfs: str) -> None:
    image = Image.new("RGB", (8, 4), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    (loaded,) = ImageLoader()([_put(f"{memfs}/rot.jpg", buf.getvalue())])
    assert loaded.shape == (8, 4, 3)


def test_image_loader_keeps_decompression_bomb_guard(memfs: str) -> None:
    uri = _put(f"{memfs}/big.png", _png(np.zeros((20, 30, 3), np.uint8)))
    with pytest.raises(LoadError, match=r"20 = 600 pixels, more than max_pixels=100") as info:
        ImageLoader(max_pixels=100)([uri])
    assert info.value.uri == uri and "30x20" in str(info.value)
    assert ImageLoader(max_pixels=600)([uri])[0].shape == (20, 30, 3)
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS  # Pillow's default, untouched
    assert ImageLoader().get_config() == {"max_pixels": Image.MAX_IMAGE_PIXELS}
    for bad in (None, 0, -5, 1.5, True):
        with pytest.raises(ConfigError, match="cannot be switched off"):
            ImageLoader(max_pixels=bad)  # type: ignore[arg-type]


def test_image_loader_reports_pillow_global_limit(memfs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    uri = _put(f"{memfs}/medium.png", _png(np.zeros((10, 10, 3), np.uint8)))
    with pytest.raises(LoadError, match="PIL.Image.MAX_IMAGE_PIXELS=10"):
        ImageLoader(max_pixels=1000)([uri])


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("nosuchprotocol://bucket/x.png", "nosuchprotocol://bucket/x.png"),
        ("{root}/dir", "{root}/dir"),
    ],
)
def test_image_loader_unreadable_uris(memfs: str, uri: str, match: str) -> None:
    _put(f"{memfs}/dir/inner.png", _png(np.zeros((2, 2, 3), np.uint8)))
    uri, match = uri.format(root=memfs), match.format(root=memfs)
    with pytest.raises(LoadError, match=match):
        ImageLoader()([uri])


def test_image_loader_undecodable_bytes_name_the_uri(memfs: str) -> None:
    uri = _put(f"{memfs}/fake.png", b"this is not an image")
    with pytest.raises(LoadError, match=f"cannot decode '{uri}' as an image"):
        ImageLoader()([uri])
    truncated = _put(f"{memfs}/cut.png", _png(np.zeros((50, 50, 3), np.uint8))[:60])
    with pytest.raises(LoadError, match="cut.png"):
        ImageLoader()([truncated])


def test_loader_rejects_non_string_uris() -> None:
    with pytest.raises(LoadError, match="position 1 is a int"):
        ImageLoader()(["memory://x.png", 3])  # type: ignore[list-item]


def test_image_loader_many_uris_in_parallel_keep_order(memfs: str) -> None:
    uris = [_put(f"{memfs}/{i}.png", _png(np.full((2, 2, 3), i, np.uint8))) for i in range(20)]
    out = loaders.build_loader("image", {}, max_workers=4)(uris)
    assert [int(im[0, 0, 0]) for im in out] == list(range(20))
    with pytest.raises(ConfigError, match="max_workers must be a positive integer"):
        loaders.build_loader("image", {}, max_workers=0)
    with pytest.raises(ConfigError, match="host runtime option"):
        loaders.build_loader("image", {"max_workers": 2})


def test_image_loader_decode_bytes_directly(rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(ImageLoader().decode(_png(rgb)), rgb)


# ---------------------------------------------------------------- TextLoader
def test_text_loader_encodings(memfs: str) -> None:
    uri = _put(f"{memfs}/latin.txt", "café".encode("latin-1"))
    with pytest.raises(LoadError, match=f"cannot decode '{uri}' as utf-8 text.*latin-1"):
        TextLoader()([uri])
    assert loaders.build_loader("text", {"encoding": "latin-1"})([uri]) == ["café"]
    with pytest.raises(ConfigError, match="unknown text encoding 'klingon'"):
        TextLoader(encoding="klingon")


# ---------------------------------------------------------------- registry
def test_unknown_loader_name() -> None:
    with pytest.raises(UnknownNameError, match=r"no data loader named 'imag' \(did you mean 'image'\?\)"):
        loaders.build_loader("imag", {})


def test_user_loader_registration(memfs: str) -> None:
    @loaders.register("test-bytes-length")
    class LengthLoader(BaseDataLoader):
        @staticmethod
        def name() -> str:
            return "test-bytes-length"

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> LengthLoader:
            return LengthLoader._from_config(config)

        def _load_one(self, uri: str) -> int:
            with fsspec.open(uri, "rb") as f:
                return len(f.read())

    try:
        uri = _put(f"{memfs}/five", b"12345")
        assert loaders.build_loader("test-bytes-length", {})([uri]) == [5]
        with pytest.raises(ValueError, match="already registered"):
            loaders.register("test-bytes-length")(type("Other", (LengthLoader,), {}))
    finally:
        data_loaders.unregister("test-bytes-length")
