"""Cutouts of a stored alert: the gzipped FITS exactly as in the packet, or a PNG with a chosen stretch."""
import io

import fastavro
import numpy as np

from pipeline.backends import archive
from pipeline.ingest.storage import ArchiveMissing
from pipeline.models import RawAlert
from pipeline.surveys.ztf import CUTOUT_FIELDS, cutout_image

STAMP_TYPES = tuple(CUTOUT_FIELDS)  # science, template, difference
STRETCHES = ("asinh", "zscale", "linear")


class StampMissing(LookupError):
    """No stored alert, or the alert carries no such cutout."""


def raw_alert(candid, oid=None):
    """(RawAlert row, packet bytes) of ``candid``: ``oid``'s alert when oid is given (a Rubin diaSourceId may
    equal a ZTF candid), else the ZTF alert; StampMissing when it is not stored (or not ``oid``'s)."""
    alerts = RawAlert.objects.filter(candid=candid)
    row = alerts.filter(oid=oid).first() if oid else alerts.filter(survey="ztf").first()
    if row is None:
        other = alerts.first() if oid else None
        if other is None:
            raise StampMissing(f"no stored alert with candid {candid}")
        raise StampMissing(f"alert {candid} belongs to {other.oid}, not {oid}")
    try:
        return row, archive().load(row.archive_key)
    except ArchiveMissing:
        raise StampMissing(f"the packet of alert {candid} is missing from the archive")


def cutout_bytes(packet, stamp_type):
    """The ``stampData`` of one cutout (gzipped FITS, as ZTF sends it)."""
    for record in fastavro.reader(io.BytesIO(packet)):
        cutout = record.get(CUTOUT_FIELDS[stamp_type]) or {}
        data = cutout.get("stampData")
        if data:
            return bytes(data)
    raise StampMissing(f"the alert carries no {stamp_type} cutout")


def stretch_image(image, stretch="asinh"):
    """Scale a cutout to 0..1 for display: zscale limits (IRAF's algorithm, as astropy implements it),
    then a linear or asinh stretch; NaN pixels become 0."""
    from astropy.visualization import AsinhStretch, LinearStretch, ZScaleInterval

    image = np.asarray(image, dtype=float)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros_like(image)
    filled = np.where(finite, image, np.nanmedian(image))
    if stretch == "asinh":
        low, high = np.percentile(filled, [0.5, 99.7])
        scaled = AsinhStretch(a=0.1)(np.clip((filled - low) / max(high - low, 1e-12), 0, 1))
    else:
        low, high = ZScaleInterval().get_limits(filled)
        scaled = np.clip((filled - low) / max(high - low, 1e-12), 0, 1)
        if stretch == "linear":
            scaled = LinearStretch()(scaled)
    return np.where(finite, scaled, 0.0)


def png_bytes(image, stretch="asinh", scale=4):
    """PNG of the stretched cutout, enlarged ``scale`` times (nearest neighbour), north up as ZTF stores it."""
    from PIL import Image

    pixels = (stretch_image(image, stretch) * 255).round().astype(np.uint8)
    pixels = np.flipud(pixels)  # FITS row 0 is the bottom
    img = Image.fromarray(pixels, mode="L")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def stamp_png(packet, stamp_type, stretch="asinh"):
    return png_bytes(cutout_image(cutout_bytes(packet, stamp_type)), stretch)
