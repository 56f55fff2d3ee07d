"""SIMULATED alert stamps for the stamp classifier's training set: ZTF-format cutouts + candidate fields.

Every simulated alert says so: its FITS headers carry ``SIMULATE= T`` and ``ORIGIN = 'broker simulator'``,
its record ``simulated=True`` and its objectId starts with ``ZTFSIM``.

Image model (per alert): sky level 20-300 DN; science noise 4-25 DN; reference (a deep coadd) at the
same photometric scale with 5-25% of the science noise and sharper seeing; difference = science minus
the reference matched to the science PSF, so static sources cancel (up to a small residual) and
only what changed remains, with science-like noise. PSFs are Moffat (beta 3) with FWHM 1.5-3.5 px
(ZTF: 1.01 arcsec/px, seeing 1.5-3 arcsec); zero point 26 (flux in DN = 10**(-0.4 (m - 26))).
The alert is at the cutout centre, as in ZTF.

Class signatures (Carrasco-Davis et al. 2021, sect. 2):
- SN: a point source offset 0.5-4 px from the centre of a host galaxy (10% hostless), absent in the reference;
- AGN: a nuclear point source varying in the core of a galaxy (positive or negative difference);
- VS: a star present in the reference that brightened or faded;
- asteroid: a point source absent from the reference, near the ecliptic, no static counterpart;
- bogus: dipoles (misaligned subtraction), cosmic rays, bad columns, saturated stars with bleed
  trails, and NaN regions (cutouts at a CCD edge).
Metadata follow each class's physics (star/galaxy score and distance of the nearest PS1 source,
history counts, sky position); they are plausible, not fitted to any real set.
"""
import gzip
import io

import numpy as np

from pipeline.steps.stamps import CLASSES, STAMP_SIZE

ZERO_POINT = 26.0
_GRID = np.mgrid[0:STAMP_SIZE, 0:STAMP_SIZE].astype(np.float64)  # (y, x)
CENTRE = STAMP_SIZE // 2
BOGUS_KINDS = ("dipole", "cosmic_ray", "bad_column", "saturated_star", "noise_nan")


def flux(mag):
    return 10 ** (-0.4 * (mag - ZERO_POINT))


def moffat(x0, y0, fwhm, total, beta=3.0):
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    r2 = (_GRID[1] - x0) ** 2 + (_GRID[0] - y0) ** 2
    profile = (1 + r2 / alpha**2) ** (-beta)
    return total * profile * (beta - 1) / (np.pi * alpha**2)


def galaxy(x0, y0, r_e, q, angle, total, fwhm, sersic_n=1.0):
    """A Sersic-like galaxy blurred to ``fwhm`` (by a Gaussian) with ``total`` flux."""
    from scipy.ndimage import gaussian_filter

    dx, dy = _GRID[1] - x0, _GRID[0] - y0
    c, s = np.cos(angle), np.sin(angle)
    r = np.sqrt((dx * c + dy * s) ** 2 + ((-dx * s + dy * c) / q) ** 2)
    b = 2 * sersic_n - 1 / 3
    image = np.exp(-b * ((r / r_e) ** (1 / sersic_n) - 1))
    image = gaussian_filter(image, fwhm / 2.355)
    return total * image / image.sum()


def to_fits_gz(image):
    """ZTF's cutout format: a gzipped FITS primary HDU, BITPIX -32, 63x63, BUNIT 'DN'; marked simulated."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    hdu.header["BUNIT"] = "DN"
    hdu.header["SIMULATE"] = (True, "simulated cutout, not a telescope image")
    hdu.header["ORIGIN"] = "broker simulator"
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return gzip.compress(buffer.getvalue(), compresslevel=1)


_SKY_POOL = {}


def _sky_pool():
    """200,000 positions uniform over dec > -30 with their |galactic| and |ecliptic| latitudes (fixed seed)."""
    if not _SKY_POOL:
        from pipeline.steps.stamps import sky_coordinates

        rng = np.random.default_rng(12345)
        ra = rng.uniform(0, 360, 200_000)
        dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-30)), 1, ra.size)))
        coords = sky_coordinates(ra, dec)
        _SKY_POOL.update(ra=ra, dec=dec, b=np.abs(coords["gal_lat"]), beta=np.abs(coords["ecl_lat"]))
    return _SKY_POOL


def _sky_position(rng, cls):
    """(ra, dec) over the ZTF sky (dec > -30), weighted by where each class is found."""
    pool = _sky_pool()
    for _ in range(1000):
        i = int(rng.integers(pool["ra"].size))
        b, beta = pool["b"][i], pool["beta"][i]
        if cls == "asteroid":
            keep = np.exp(-0.5 * (beta / 10) ** 2)
        elif cls == "VS":
            keep = 0.25 + 0.75 * np.exp(-b / 15)
        elif cls in ("SN", "AGN"):
            keep = 0.05 if b < 10 else 1.0
        else:
            keep = 1.0
        if rng.uniform() < keep:
            break
    return float(pool["ra"][i]), float(pool["dec"][i])


def _static_field(rng, fwhm_sci, fwhm_ref):
    """A few unrelated field stars away from the centre: (science image, reference image) fluxes."""
    sci = np.zeros((STAMP_SIZE, STAMP_SIZE))
    ref = np.zeros_like(sci)
    for _ in range(rng.poisson(3)):
        x, y = rng.uniform(0, STAMP_SIZE, 2)
        if np.hypot(x - CENTRE, y - CENTRE) < 6:
            continue
        f = flux(rng.uniform(15, 22))
        sci += moffat(x, y, fwhm_sci, f)
        ref += moffat(x, y, fwhm_ref, f)
    return sci, ref


def _ps1_unrelated(rng):
    """Nearest PS1 sources unrelated to the alert: a random field (or none: ZTF's -999)."""
    out = {}
    distance = 0.0
    for i in (1, 2, 3):
        if rng.uniform() < 0.08:
            out[f"sgscore{i}"], out[f"distpsnr{i}"] = -999.0, -999.0
            continue
        distance = distance + rng.exponential(6.0) + (1.5 if i == 1 else 0.0)
        out[f"sgscore{i}"] = float(rng.choice([rng.uniform(0, 0.3), rng.uniform(0.7, 1.0), 0.5]))
        out[f"distpsnr{i}"] = float(distance)
    return out


def _ps1_counterpart(rng, sgscore, distance):
    """Nearest PS1 source is the alert's own counterpart; the 2nd and 3rd are further field sources."""
    out = {"sgscore1": float(np.clip(sgscore, 0, 1)), "distpsnr1": float(max(distance, 0.01))}
    d = out["distpsnr1"]
    for i in (2, 3):
        d += rng.exponential(6.0) + 1.0
        out[f"sgscore{i}"] = float(rng.choice([rng.uniform(0, 0.3), rng.uniform(0.7, 1.0), 0.5]))
        out[f"distpsnr{i}"] = float(d)
    return out


def simulate_alert(cls, rng, index=0):
    """One simulated alert of class ``cls``: dict with 'candidate', the three cutouts (bytes) and labels."""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}")
    sky = rng.uniform(20, 300)
    sigma_sci = rng.uniform(4, 25)
    sigma_ref = sigma_sci * rng.uniform(0.05, 0.25)
    fwhm_sci = rng.uniform(1.5, 3.5)
    fwhm_ref = min(fwhm_sci, rng.uniform(1.4, 2.6))
    limit = rng.normal(20.3, 0.5)  # 5-sigma limiting magnitude of the difference image
    static_sci, static_ref = _static_field(rng, fwhm_sci, fwhm_ref)
    change = np.zeros_like(static_sci)  # what changed, in the science PSF
    ref_extra = np.zeros_like(static_sci)
    sci_extra = np.zeros_like(static_sci)  # flux that appeared since the reference
    kind = cls
    cx, cy = CENTRE + rng.uniform(-0.5, 0.5, 2)
    mag = float(np.clip(rng.normal(limit - 1.2, 0.8), 14.5, limit - 0.1))
    isdiffpos = "t"
    cand = {"ndethist": 1, "ncovhist": int(rng.integers(1, 1500)), "classtar": rng.uniform(0.5, 1.0),
            "chinr": rng.uniform(0.5, 3), "sharpnr": rng.uniform(-0.2, 0.3)}
    fwhm_feature = fwhm_sci * rng.normal(1.0, 0.08)

    if cls == "SN":
        hostless = rng.uniform() < 0.1
        if not hostless:
            offset = rng.uniform(0.5, 4.0)
            angle = rng.uniform(0, 2 * np.pi)
            gx, gy = cx + offset * np.cos(angle), cy + offset * np.sin(angle)
            host_mag = rng.uniform(16.5, 21.0)
            r_e, q = rng.uniform(1.5, 6.0), rng.uniform(0.4, 1.0)
            n = rng.choice([1.0, 4.0])
            pa = rng.uniform(0, np.pi)
            static_sci += galaxy(gx, gy, r_e, q, pa, flux(host_mag), fwhm_sci, n)
            static_ref += galaxy(gx, gy, r_e, q, pa, flux(host_mag), fwhm_ref, n)
            cand.update(_ps1_counterpart(rng, rng.uniform(0, 0.35), offset * 1.01 + rng.normal(0, 0.2)))
            cand["chinr"], cand["sharpnr"] = rng.uniform(1, 10), rng.uniform(0.1, 1.2)
        else:
            cand.update(_ps1_unrelated(rng))
        sci_extra += moffat(cx, cy, fwhm_sci, flux(mag))
        cand["ndethist"] = int(rng.choice([1, 1, 1, 2, 3]))
        cand["classtar"] = rng.uniform(0.3, 1.0)
    elif cls == "AGN":
        host_mag = rng.uniform(17, 21)
        r_e, q = rng.uniform(1.0, 4.0), rng.uniform(0.5, 1.0)
        nucleus = flux(rng.uniform(17, 20.5))
        pa = rng.uniform(0, np.pi)
        static_sci += galaxy(cx, cy, r_e, q, pa, flux(host_mag), fwhm_sci) + moffat(cx, cy, fwhm_sci, nucleus)
        static_ref += galaxy(cx, cy, r_e, q, pa, flux(host_mag), fwhm_ref) + moffat(cx, cy, fwhm_ref, nucleus)
        delta = flux(mag)
        if rng.uniform() < 0.4:
            isdiffpos = "f"
            static_ref += moffat(cx, cy, fwhm_ref, delta)
            change -= moffat(cx, cy, fwhm_sci, delta)
        else:
            sci_extra += moffat(cx, cy, fwhm_sci, delta)
        point_like = rng.uniform() < 0.35  # quasars look like stars to PS1
        cand.update(_ps1_counterpart(rng, rng.uniform(0.6, 1.0) if point_like else rng.uniform(0, 0.5),
                                     abs(rng.normal(0, 0.25))))
        cand["ndethist"] = int(rng.integers(2, 60))
        cand["ncovhist"] = int(rng.integers(cand["ndethist"] + 10, 3000))
        cand["chinr"], cand["sharpnr"] = rng.uniform(0.5, 4), rng.uniform(-0.05, 0.4)
    elif cls == "VS":
        star_mag = rng.uniform(13.5, 20.5)
        star = flux(star_mag)
        static_sci += moffat(cx, cy, fwhm_sci, star)
        static_ref += moffat(cx, cy, fwhm_ref, star)
        delta = flux(mag)
        if rng.uniform() < 0.5:
            isdiffpos = "f"
            delta = min(delta, 0.9 * star)
            static_sci -= moffat(cx, cy, fwhm_sci, delta)
            change -= moffat(cx, cy, fwhm_sci, delta)
        else:
            sci_extra += moffat(cx, cy, fwhm_sci, delta)
        cand.update(_ps1_counterpart(rng, rng.uniform(0.75, 1.0) if rng.uniform() < 0.9 else rng.uniform(0, 0.75),
                                     abs(rng.normal(0, 0.2))))
        cand["ndethist"] = int(rng.integers(1, 80))
        cand["ncovhist"] = int(rng.integers(cand["ndethist"], 3000))
        cand["classtar"] = rng.uniform(0.8, 1.0)
        cand["chinr"], cand["sharpnr"] = rng.uniform(0.3, 2.0), rng.normal(0, 0.05)
    elif cls == "asteroid":
        trail = rng.uniform(0, 2.5) if rng.uniform() < 0.3 else 0.0
        angle = rng.uniform(0, np.pi)
        steps = max(1, int(trail * 3))
        for t in np.linspace(-trail / 2, trail / 2, steps):
            sci_extra += moffat(cx + t * np.cos(angle), cy + t * np.sin(angle), fwhm_sci, flux(mag) / steps)
        cand.update(_ps1_unrelated(rng))
        cand["ndethist"] = int(rng.choice([1, 1, 1, 1, 2]))
        fwhm_feature *= 1 + trail / 4
    else:
        kind = str(rng.choice(BOGUS_KINDS))
        cand.update(_ps1_unrelated(rng))
        cand["ndethist"] = int(rng.choice([1, 1, 1, 2, 3, rng.integers(4, 40)]))
        isdiffpos = "t" if rng.uniform() < 0.6 else "f"
        if kind == "dipole":
            star = flux(rng.uniform(13, 19))
            shift = rng.uniform(0.4, 1.5)
            a = rng.uniform(0, 2 * np.pi)
            sx, sy = cx + shift * np.cos(a) / 2, cy + shift * np.sin(a) / 2
            rx, ry = cx - shift * np.cos(a) / 2, cy - shift * np.sin(a) / 2
            static_sci += moffat(sx, sy, fwhm_sci, star)
            static_ref += moffat(rx, ry, fwhm_ref, star)
            change += moffat(sx, sy, fwhm_sci, star) - moffat(rx, ry, fwhm_sci, star)
            cand.update(_ps1_counterpart(rng, rng.uniform(0.6, 1.0), abs(rng.normal(0, 0.4))))
        elif kind == "cosmic_ray":
            hit = np.zeros_like(change)
            length = int(rng.integers(1, 6))
            a = rng.uniform(0, np.pi)
            for t in range(length):
                x = int(round(CENTRE + (t - length / 2) * np.cos(a)))
                y = int(round(CENTRE + (t - length / 2) * np.sin(a)))
                hit[y, x] += flux(mag) * rng.uniform(0.3, 1.0)
            change += hit
            static_sci += hit
            fwhm_feature = rng.uniform(0.5, 1.3)
            isdiffpos = "t"
        elif kind == "bad_column":
            column = np.zeros_like(change)
            level = rng.uniform(3, 30) * sigma_sci
            start = int(rng.integers(0, STAMP_SIZE // 2))
            if rng.uniform() < 0.5:
                column[start:, CENTRE + int(rng.integers(-1, 2))] = level
            else:
                column[CENTRE + int(rng.integers(-1, 2)), start:] = level
            if rng.uniform() < 0.7:
                static_sci += column
                change += column
            else:
                ref_extra += column
                change -= column
                isdiffpos = "f"
        elif kind == "saturated_star":
            star = flux(rng.uniform(9, 12.5))
            sat = rng.uniform(3000, 60000)
            sci_star = moffat(cx, cy, fwhm_sci, star)
            ref_star = moffat(cx, cy, fwhm_ref, star)
            bleed = np.zeros_like(sci_star)
            half = int(rng.integers(2, 20))
            bleed[max(0, CENTRE - half):CENTRE + half, CENTRE] = sat
            sci_img = np.minimum(sci_star + bleed, sat)
            static_sci += sci_img
            static_ref += np.minimum(ref_star, sat * rng.uniform(1, 3))
            change += sci_img - np.minimum(moffat(cx, cy, fwhm_sci, star * rng.uniform(0.9, 1.1)), sat)
            cand.update(_ps1_counterpart(rng, rng.uniform(0.8, 1.0), abs(rng.normal(0, 0.3))))
            fwhm_feature = rng.uniform(3, 12)
            mag = float(rng.uniform(14, 18))
        else:  # noise_nan: a bad subtraction of a noisy patch; NaN regions added below
            change += rng.normal(0, sigma_sci * rng.uniform(1, 3), change.shape)
        cand["chinr"], cand["sharpnr"] = rng.uniform(-1, 15), rng.uniform(-1, 1.5)
        cand["classtar"] = rng.uniform(0, 1.0)

    change += sci_extra
    science = sky + static_sci + sci_extra + rng.normal(0, sigma_sci, change.shape)
    reference = sky + static_ref + ref_extra + rng.normal(0, sigma_ref, change.shape)
    residual = rng.uniform(0, 0.03) * (static_sci - static_ref)
    difference = change + residual + rng.normal(0, sigma_sci * 1.05, change.shape)
    if cls == "bogus" and (kind == "noise_nan" or rng.uniform() < 0.25) or rng.uniform() < 0.02:
        for image in _nan_region(rng):
            science[image] = np.nan
            difference[image] = np.nan
            if rng.uniform() < 0.5:
                reference[image] = np.nan

    ra, dec = _sky_position(rng, cls)
    sigmapsf = float(np.clip(1.0857 / (5 * 10 ** (-0.4 * (mag - limit))), 0.01, 0.35))
    cand.update(
        candid=900000000000000000 + index, ra=ra, dec=dec, magpsf=mag + rng.normal(0, sigmapsf), sigmapsf=sigmapsf,
        diffmaglim=float(limit), isdiffpos=isdiffpos, fwhm=float(fwhm_feature), fid=int(rng.choice([1, 2])),
    )
    cand["ncovhist"] = max(cand["ncovhist"], cand["ndethist"])
    return {
        "objectId": f"ZTFSIM{index:09d}"[:15],
        "candidate": cand,
        "cutoutScience": to_fits_gz(science),
        "cutoutTemplate": to_fits_gz(reference),
        "cutoutDifference": to_fits_gz(difference),
        "class": cls,
        "kind": kind,
        "simulated": True,
    }


def _nan_region(rng):
    """Index expressions of NaN regions: a CCD edge (rows or columns) or a masked rectangle."""
    if rng.uniform() < 0.6:
        width = int(rng.integers(3, 28))
        side = int(rng.integers(4))
        edge = [np.s_[:width, :], np.s_[-width:, :], np.s_[:, :width], np.s_[:, -width:]][side]
        return [edge]
    y, x = rng.integers(0, STAMP_SIZE - 8, 2)
    h, w = rng.integers(2, 12, 2)
    return [np.s_[y:y + h, x:x + w]]


def simulate_alerts(per_class, seed=0):
    """``per_class`` simulated alerts of each class (dict class -> n, or an int for all), seeded."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else {c: per_class for c in CLASSES}
    alerts, index = [], 0
    for cls in CLASSES:
        for _ in range(counts.get(cls, 0)):
            alerts.append(simulate_alert(cls, rng, index))
            index += 1
    return alerts
