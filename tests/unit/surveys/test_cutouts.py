"""Cutouts read with bounded memory: gzip bombs and images declared huge are refused, real cutouts read."""
import gzip
import io
import tracemalloc

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from pipeline.surveys.cutouts import MAX_CUTOUT_BYTES, BadCutout, CutoutTooLarge, cutout_fits_bytes, cutout_image
from tests.conftest import require_shared
from tests.cutout_bombs import gzip_bomb, tile_compressed_bomb

BOMB_BYTES = 100 * 2**20  # a 100 KB cutout that inflates to 100 MiB


def peak_bytes(call, *args):
    """(outcome, peak traced bytes) of ``call(*args)``; the outcome is the exception it raised, if any."""
    tracemalloc.start()
    try:
        outcome = call(*args)
    except Exception as exc:  # noqa: BLE001 - the caller asserts which
        outcome = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return outcome, peak


def test_a_gzip_bomb_cutout_is_refused_within_bounded_memory():
    bomb = gzip_bomb(BOMB_BYTES)
    assert len(bomb) < 200_000 and MAX_CUTOUT_BYTES < BOMB_BYTES / 10
    outcome, peak = peak_bytes(cutout_image, bomb)
    assert isinstance(outcome, CutoutTooLarge), outcome
    assert peak < 3 * MAX_CUTOUT_BYTES, f"peak {peak / 2**20:.1f} MiB"


def test_a_tile_compressed_image_declared_huge_is_refused_within_bounded_memory():
    bomb = tile_compressed_bomb(4096)  # 64 MiB of pixels in a 80 KB plain FITS
    assert len(bomb) < MAX_CUTOUT_BYTES
    outcome, peak = peak_bytes(cutout_image, bomb)
    assert isinstance(outcome, CutoutTooLarge), outcome
    assert peak < 3 * MAX_CUTOUT_BYTES, f"peak {peak / 2**20:.1f} MiB"


def test_the_cap_is_exact_and_corrupt_gzip_is_a_bad_cutout():
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert cutout_fits_bytes(gzip.compress(payload), limit=len(payload)) == payload
    with pytest.raises(CutoutTooLarge):
        cutout_fits_bytes(gzip.compress(payload), limit=len(payload) - 1)
    # two members, as gzip.decompress reads them
    assert cutout_fits_bytes(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    with pytest.raises(BadCutout, match="truncated"):
        cutout_fits_bytes(gzip.compress(payload)[:1000])
    with pytest.raises(BadCutout, match="not valid gzip"):
        cutout_fits_bytes(b"\x1f\x8b\x08 this is not a gzipped FITS file")
    with pytest.raises(BadCutout):
        cutout_image(gzip.compress(b"not a FITS file" * 100))


def test_real_cutouts_read_as_before():
    folder = require_shared("ztf_alerts")
    path = sorted(folder.glob("*.avro"))[0]
    record = next(fastavro.reader(io.BytesIO(path.read_bytes())))
    stamp = record["cutoutScience"]["stampData"]
    with fits.open(io.BytesIO(gzip.decompress(stamp))) as hdul:
        expected = np.asarray(hdul[0].data)
    image = cutout_image(stamp)
    assert image.shape == expected.shape and np.array_equal(image, expected, equal_nan=True)
