"""A cutout's ``stampData`` (gzipped or plain FITS) read into an image with bounded memory.

Every reader of cutouts (the stamp classifier, the API's and dashboard's stamps, the multisurvey
stamp route) goes through ``cutout_image``: the gzip stream is inflated at most ``MAX_CUTOUT_BYTES``
and the FITS image is read only when its header declares no more than that, so a crafted cutout
(a gzip bomb, a header claiming a huge image) costs a few MiB, not gigabytes.

Pure Python + astropy; no Django, no Celery.
"""
import io
import warnings
import zlib

import numpy as np

#: Decompressed FITS bytes one cutout may take (and pixel bytes its image may declare). ZTF's
#: 63x63 float32 cutout is 20 KB, Rubin's of the shared packets at most 43 KB: 2 MiB is ~50x that.
MAX_CUTOUT_BYTES = 2 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"


class BadCutout(ValueError):
    """A cutout that cannot be read: not gzip/FITS, truncated, no image."""


class CutoutTooLarge(BadCutout):
    """A cutout that would decompress (or declares an image) beyond ``MAX_CUTOUT_BYTES``."""


def cutout_fits_bytes(stamp_bytes, limit=MAX_CUTOUT_BYTES):
    """The FITS bytes of ``stampData``: gunzipped (every member) when gzipped, never more than ``limit``."""
    if not stamp_bytes:
        raise BadCutout("no cutout data")
    raw = bytes(stamp_bytes)
    if raw[:2] != _GZIP_MAGIC:
        if len(raw) > limit:
            raise CutoutTooLarge(f"cutout of {len(raw)} bytes exceeds {limit} bytes")
        return raw
    out, rest = [], raw
    total = 0
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(rest, limit - total + 1)
        except zlib.error as exc:
            raise BadCutout(f"cutout is not valid gzip: {exc}") from None
        total += len(chunk)
        if total > limit:
            raise CutoutTooLarge(f"cutout decompresses beyond {limit} bytes")
        if not inflater.eof:
            raise BadCutout("cutout gzip stream is truncated")
        out.append(chunk)
        rest = inflater.unused_data.lstrip(b"\x00")  # gzip tolerates zero padding between members
    return b"".join(out)


def _declared_bytes(header):
    """Pixel bytes an HDU's header declares (a tile-compressed image: its uncompressed size)."""
    prefix = "Z" if "ZNAXIS" in header else ""
    size = abs(int(header.get(f"{prefix}BITPIX", 8))) // 8
    for axis in range(1, int(header.get(f"{prefix}NAXIS", 0)) + 1):
        size *= max(int(header.get(f"{prefix}NAXIS{axis}", 0)), 0)
    return size if int(header.get(f"{prefix}NAXIS", 0)) else 0


def cutout_image(stamp_bytes, limit=MAX_CUTOUT_BYTES):
    """The first image of a cutout's ``stampData`` (gzipped or plain FITS), native byte order.

    Raises ``CutoutTooLarge`` past ``limit`` and ``BadCutout`` for anything else unreadable. ZTF writes
    ``SIMPLE  =  T`` with the value off its fixed-format column; astropy reads it fine but warns, so
    that one VerifyWarning is silenced here.
    """
    from astropy.io import fits  # imported here: the ingest hot path does not need astropy
    from astropy.io.fits.verify import VerifyWarning

    raw = cutout_fits_bytes(stamp_bytes, limit)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Found a SIMPLE card", category=VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                for hdu in hdul:
                    declared = _declared_bytes(hdu.header)
                    if declared > limit:
                        raise CutoutTooLarge(f"cutout declares a {declared}-byte image, beyond {limit} bytes")
                    if declared and hdu.data is not None:
                        data = np.asarray(hdu.data)
                        return data.astype(data.dtype.newbyteorder("="), copy=True)
    except BadCutout:
        raise
    except Exception as exc:  # astropy and numpy raise many types on corrupt input
        raise BadCutout(f"cutout unreadable: {type(exc).__name__}: {exc}") from None
    raise BadCutout("FITS cutout holds no image")
