"""What a photo says about itself: size, format and EXIF, read from an image Pillow has already opened.

:func:`photo_metadata` turns an open ``PIL.Image`` into flat metadata a vector store can
filter on. It reads only what opening the file parsed (the header and, for JPEG, the APP1
EXIF block), so it costs no second read of the file; ``ImageLoader`` hands it the image it
is decoding through its ``on_open`` hook.

Keys (a key is absent when the file does not say; a file without EXIF has only the first three):

======================  =======  ====================================================================
``width``, ``height``   int      pixels as the photo is shown (EXIF orientation applied)
``format``              str      Pillow's name for the file format: ``"JPEG"``, ``"PNG"``, ``"WEBP"``...
``date_taken``          str      EXIF DateTimeOriginal (else DateTime), ISO 8601:
                                 ``"2024-07-01T14:03:22"``, with ``+02:00`` when the camera recorded
                                 its offset
``date_taken_ts``       int      the same instant in seconds since 1970-01-01 UTC, so ``$gte``/``$lt``
                                 filters select a date range; without a recorded offset the camera's
                                 wall-clock time is read as UTC
``camera_make``         str      EXIF Make, e.g. ``"Canon"``
``camera_model``        str      EXIF Model, e.g. ``"Canon EOS 5D"``
``orientation``         int      EXIF Orientation, 1-8 (1 = upright)
======================  =======  ====================================================================
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["EXIF_KEYS", "PHOTO_KEYS", "photo_metadata"]

EXIF_KEYS = ("date_taken", "date_taken_ts", "camera_make", "camera_model", "orientation")
PHOTO_KEYS = ("width", "height", "format", *EXIF_KEYS)

_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL = 0x8769, 0x9003, 0x9011
_SWAPS_AXES = (5, 6, 7, 8)  # orientations that turn the picture a quarter (width and height swap)


def photo_metadata(image: Any) -> dict[str, Any]:
    """Flat metadata of an opened (not necessarily decoded) Pillow image.

    Malformed EXIF values are left out rather than failing the file: a photo with a garbled
    date is still a photo.

    Example:
        >>> from PIL import Image
        >>> photo_metadata(Image.new("RGB", (6, 4)))
        {'width': 6, 'height': 4}
    """
    width, height = image.size
    try:
        exif = image.getexif()
    except Exception:  # noqa: BLE001 - a broken EXIF block must not cost the photo
        exif = {}
    orientation = _int(exif.get(_ORIENTATION))
    if orientation in _SWAPS_AXES:
        width, height = height, width
    meta: dict[str, Any] = {"width": int(width), "height": int(height)}
    if image.format:
        meta["format"] = str(image.format)
    if not exif:
        return meta
    sub = _exif_ifd(exif)
    taken = _taken(sub.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME), sub.get(_OFFSET_TIME_ORIGINAL))
    if taken is not None:
        meta["date_taken"] = taken.isoformat()
        as_utc = taken if taken.tzinfo else taken.replace(tzinfo=timezone.utc)
        meta["date_taken_ts"] = int(as_utc.timestamp())
    for key, tag in (("camera_make", _MAKE), ("camera_model", _MODEL)):
        text = _text(exif.get(tag))
        if text:
            meta[key] = text
    if orientation in range(1, 9):
        meta["orientation"] = orientation
    return meta


def _exif_ifd(exif: Any) -> Any:
    try:
        return exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - see photo_metadata
        return {}


def _taken(value: Any, offset: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        taken = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders cameras write
        return None
    zone = _text(offset)
    if zone and len(zone) == 6 and zone[0] in "+-" and zone[3] == ":":
        try:
            delta = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        except ValueError:
            return taken
        return taken.replace(tzinfo=timezone(delta if zone[0] == "+" else -delta))
    return taken


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
