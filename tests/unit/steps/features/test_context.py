"""Context features: galactic coordinates, colours, scores and AllWISE colours."""
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord

from pipeline.steps.features import context
from pipeline.steps.features.base import NO_DATA, NO_WISE_MATCH


def test_galactic_coordinates_of_known_positions():
    # Galactic centre and north galactic pole (ICRS)
    l, b = context.galactic([266.40499, 192.85948], [-28.93617, 27.12825])
    assert min(l[0], 360 - l[0]) == pytest.approx(0.0, abs=0.01)
    assert b[0] == pytest.approx(0.0, abs=0.01)
    assert b[1] == pytest.approx(90.0, abs=0.01)


def test_galactic_coordinates_match_astropy_for_a_batch():
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, 200), np.degrees(np.arcsin(rng.uniform(-1, 1, 200)))
    l, b = context.galactic(ra, dec)
    for i in range(0, 200, 37):
        one = SkyCoord(ra=ra[i], dec=dec[i], unit="deg", frame="icrs").galactic
        assert l[i] == pytest.approx(one.l.degree, abs=1e-8)
        assert b[i] == pytest.approx(one.b.degree, abs=1e-8)


def _batch():
    rows = [  # oid, fid, mag (light curve used), magpsf, magpsf_corr, rb, sgscore1, ra, dec
        ("A", 1, 18.0, 19.0, 18.0, 0.9, 0.98, 10.0, 20.0),
        ("A", 1, 18.2, 19.2, 18.2, 0.7, 0.98, 10.0, 20.0),
        ("A", 2, 17.5, 18.5, 17.5, 0.8, 0.98, 10.0, 20.0),
        ("A", 2, 17.7, 18.9, 17.7, 0.6, 0.98, 10.0, 20.0),
        ("B", 1, 20.0, 20.0, np.nan, 0.5, -999.0, 150.0, -5.0),
        ("B", 1, 20.4, 20.4, np.nan, 0.6, -999.0, 150.2, -5.0),
        ("C", 2, 19.0, 19.0, np.nan, 0.8, 0.1, 30.0, 40.0),
    ]
    det = pd.DataFrame(rows, columns=["oid", "fid", "mag", "magpsf", "magpsf_corr", "rb", "sgscore1",
                                      "ra", "dec"])
    objects = pd.DataFrame({"corrected": [True, False, False], "meanra": [266.40499, np.nan, 30.0],
                            "meandec": [-28.93617, np.nan, 40.0]},
                           index=pd.Index(["A", "B", "C"], name="oid"))
    allwise = pd.DataFrame({"oid": ["A", "C"], "W1mag": [15.0, 14.0], "W2mag": [14.5, 13.0],
                            "W3mag": [12.0, np.nan], "W4mag": [9.0, np.nan]})
    return det, objects, allwise


def test_wise_colours_are_ztf_mean_minus_wise_vega():
    det, objects, allwise = _batch()
    values, reasons = context.compute_batch(det, objects, allwise)
    a = values.loc["A"]
    assert a["W1-W2"] == pytest.approx(0.5)
    assert a["W2-W3"] == pytest.approx(2.5)
    assert a["g-W2"] == pytest.approx(18.1 - 14.5)
    assert a["g-W3"] == pytest.approx(18.1 - 12.0)
    assert a["r-W2"] == pytest.approx(17.6 - 14.5)
    assert a["r-W3"] == pytest.approx(17.6 - 12.0)
    for name in ("W1-W2", "W2-W3", "g-W2", "g-W3", "r-W2", "r-W3"):
        assert reasons.loc["B", name] == NO_WISE_MATCH  # no AllWISE row
    assert values.loc["C", "r-W2"] == pytest.approx(19.0 - 13.0)
    assert reasons.loc["C", "W2-W3"] == NO_WISE_MATCH  # no W3 magnitude
    assert reasons.loc["C", "g-W2"] == NO_DATA  # no g detection
    no_wise, why = context.compute_batch(det, objects, None)
    assert no_wise[["W1-W2", "g-W2"]].isna().all().all()
    assert (why["W1-W2"] == NO_WISE_MATCH).all()


def test_colours_scores_and_position():
    det, objects, allwise = _batch()
    values, reasons = context.compute_batch(det, objects, allwise)
    assert values.loc["A", "g-r_max"] == pytest.approx(19.0 - 18.5)
    assert values.loc["A", "g-r_mean"] == pytest.approx(19.1 - 18.7)
    assert values.loc["A", "g-r_max_corr"] == pytest.approx(18.0 - 17.5)
    assert values.loc["A", "g-r_mean_corr"] == pytest.approx(18.1 - 17.6)
    assert reasons.loc["B", "g-r_max"] == context.NEEDS_G_AND_R
    assert reasons.loc["B", "g-r_max_corr"] == context.NOT_CORRECTED
    assert values.loc["A", "rb"] == pytest.approx(0.75)
    assert values.loc["A", "sgscore1"] == pytest.approx(0.98)
    assert reasons.loc["B", "sgscore1"] == context.NO_PS1_MATCH
    assert values.loc["A", "gal_b"] == pytest.approx(0.0, abs=0.01)
    # no mean position in objects: the mean detection position is used
    expected = SkyCoord(ra=150.1, dec=-5.0, unit="deg").galactic
    assert values.loc["B", "gal_l"] == pytest.approx(expected.l.degree, abs=1e-6)
    assert values.loc["B", "gal_b"] == pytest.approx(expected.b.degree, abs=1e-6)
    assert values.isna().to_numpy().sum() == reasons.notna().to_numpy().sum()
