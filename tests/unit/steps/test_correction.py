"""Correction step: formulas checked in flux space, errors by propagation, flags on hand-made light curves."""
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.steps import correction
from pipeline.steps.correction import CORRECTION_VERSION, correct, correct_objects, corrected_magnitudes, is_stellar

ZP = 25.0  # any zero point: m = ZP - 2.5 log10(flux)


def flux(mag):
    return 10.0 ** ((ZP - mag) / 2.5)


def expected(m_diff, dm_diff, sgn, m_ref, dm_ref):
    """Independent scalar computation in flux units (zero point ZP), NaN where undefined (NaN propagates)."""
    f_ref, f_diff = flux(m_ref), flux(m_diff)
    total = f_ref + sgn * f_diff
    if not total > 0:
        return math.nan, math.nan, math.nan
    m_corr = ZP - 2.5 * math.log10(total)
    # flux errors from magnitude errors: sigma_f = f * ln10 / 2.5 * sigma_m
    k = math.log(10) / 2.5
    var_sci = (k * f_diff * dm_diff) ** 2 - (k * f_ref * dm_ref) ** 2
    dm_corr = math.sqrt(var_sci) / (k * total) if var_sci >= 0 else math.nan
    dm_ext = (k * f_diff * dm_diff) / (k * total)
    return m_corr, dm_corr, dm_ext


GRID = [
    # m_diff, dm_diff, sgn, m_ref, dm_ref
    (18.0, 0.05, 1, 17.0, 0.01),    # brightening on a brighter host
    (16.0, 0.10, 1, 20.0, 0.05),    # transient dominates
    (19.0, 0.08, -1, 17.0, 0.01),   # fading star, positive total
    (17.0, 0.08, -1, 17.0, 0.01),   # total flux exactly zero -> NaN
    (16.5, 0.08, -1, 17.0, 0.01),   # negative total flux -> NaN
    (18.0, 0.01, 1, 15.0, 0.05),    # reference variance > difference variance -> dm_corr NaN
    (float("nan"), 0.05, 1, 17.0, 0.02),
    (18.0, float("nan"), 1, 17.0, 0.02),
    (18.0, 0.05, 1, float("nan"), 0.02),
    (18.0, 0.05, 1, 17.0, float("nan")),
    (18.0, 0.05, float("nan"), 17.0, 0.02),
    (21.0, 0.2, 1, 21.0, 0.2),      # equal variances -> dm_corr 0
]


@pytest.mark.parametrize("m_diff,dm_diff,sgn,m_ref,dm_ref", GRID)
def test_formulas_match_flux_space(m_diff, dm_diff, sgn, m_ref, dm_ref):
    got = [float(v[0]) for v in corrected_magnitudes([m_diff], [dm_diff], [sgn], [m_ref], [dm_ref])]
    want = expected(m_diff, dm_diff, sgn, m_ref, dm_ref)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_grid_cases_have_expected_nans():
    rows = np.array(GRID, dtype=float).T
    m, dm, ext = corrected_magnitudes(*rows)
    assert np.isnan(m[3]) and np.isnan(m[4])  # zero and negative total flux
    assert np.isnan(dm[5]) and np.isfinite(m[5]) and np.isfinite(ext[5])  # only the sqrt fails
    assert np.isfinite(m[0]) and np.isfinite(dm[0]) and dm[11] == 0.0
    assert not np.isinf(np.concatenate([m, dm, ext])).any()


def test_errors_by_finite_differences():
    """dm_corr_ext = |dm_corr/dm_diff| dm_diff; dm_corr^2 = (dm_corr/dm_diff dm_diff)^2 - (dm_corr/dm_ref dm_ref)^2."""
    rng = np.random.default_rng(1)
    m_diff = rng.uniform(15, 21, 200)
    m_ref = rng.uniform(14, 22, 200)
    sgn = rng.choice([-1.0, 1.0], 200)
    dm_diff = rng.uniform(0.02, 0.3, 200)
    dm_ref = rng.uniform(0.0, 0.05, 200)
    h = 1e-6

    def mcorr(md, mr):
        return corrected_magnitudes(md, dm_diff, sgn, mr, dm_ref)[0]

    d_diff = (mcorr(m_diff + h, m_ref) - mcorr(m_diff - h, m_ref)) / (2 * h)
    d_ref = (mcorr(m_diff, m_ref + h) - mcorr(m_diff, m_ref - h)) / (2 * h)
    _, dm_corr, dm_ext = corrected_magnitudes(m_diff, dm_diff, sgn, m_ref, dm_ref)
    ok = np.isfinite(d_diff)
    assert ok.sum() > 100
    np.testing.assert_allclose(dm_ext[ok], np.abs(d_diff[ok]) * dm_diff[ok], rtol=1e-5)
    radicand = (d_diff * dm_diff) ** 2 - (d_ref * dm_ref) ** 2
    good = ok & (radicand > 0)
    np.testing.assert_allclose(dm_corr[good], np.sqrt(radicand[good]), rtol=1e-5)
    assert np.isnan(dm_corr[ok & (radicand < -1e-9)]).all()


def test_errors_by_monte_carlo():
    """Simulate the measurement: science and reference fluxes with independent noise, difference =
    science - reference. m_corr from the noisy (m_diff, m_ref) is the science magnitude; its scatter
    is dm_corr, and the scatter from difference noise alone is dm_corr_ext."""
    rng = np.random.default_rng(7)
    n = 400_000
    f_ref, f_sci = flux(17.5), flux(17.0)  # brightening by ~0.5 mag
    s_ref, s_sci = 0.01 * f_ref, 0.02 * f_sci
    ref = rng.normal(f_ref, s_ref, n)
    sci = rng.normal(f_sci, s_sci, n)
    diff = sci - ref
    m_diff = ZP - 2.5 * np.log10(diff)
    m_ref = ZP - 2.5 * np.log10(ref)
    mc_corr = corrected_magnitudes(m_diff, 0, 1, m_ref, 0)[0]
    # nominal errors as the alert reports them
    k = math.log(10) / 2.5
    s_diff = math.hypot(s_sci, s_ref)
    dm_diff = s_diff / (k * (f_sci - f_ref))
    dm_ref = s_ref / (k * f_ref)
    m0, dm, ext = (float(v[0]) for v in corrected_magnitudes(
        [ZP - 2.5 * math.log10(f_sci - f_ref)], [dm_diff], [1], [ZP - 2.5 * math.log10(f_ref)], [dm_ref]))
    assert m0 == pytest.approx(17.0, abs=1e-12)
    assert np.std(mc_corr) == pytest.approx(dm, rel=0.02)
    # difference noise only (reference held at its true value): scatter is dm_corr_ext
    mc_ext = corrected_magnitudes(ZP - 2.5 * np.log10(rng.normal(f_sci - f_ref, s_diff, n)), 0, 1,
                                  ZP - 2.5 * math.log10(f_ref), 0)[0]
    assert np.std(mc_ext) == pytest.approx(ext, rel=0.02)


def _det(oid, fid, mjd, distnr, isdiffpos=1, magpsf=18.0, magnr=17.0, candid=None, **extra):
    row = dict(candid=candid, oid=oid, mjd=mjd, fid=fid, magpsf=magpsf, sigmapsf=0.05, isdiffpos=isdiffpos,
               magnr=magnr, sigmagnr=0.01, distnr=distnr, chinr=1.0, sharpnr=0.0, sgscore1=np.nan,
               distpsnr1=np.nan, ra=10.0, dec=20.0, rb=0.9)
    row.update(extra)
    return row


def _frame(rows):
    df = pd.DataFrame(rows)
    df["candid"] = np.arange(len(df)) + 1000 if df["candid"].isna().all() else df["candid"]
    return df


def test_flags_when_reference_status_changes():
    rows = [
        # A, g: first corrected, a later one loses its reference -> that one dubious
        _det("A", 1, 100.0, 0.3), _det("A", 1, 101.0, 0.4), _det("A", 1, 102.0, 2.5),
        # A, r: first NOT corrected, a new reference appears later -> the corrected ones dubious
        _det("A", 2, 100.5, 3.0), _det("A", 2, 103.0, 0.2), _det("A", 2, 104.0, 0.2),
        # B, g: never corrected; only the negative one is dubious
        _det("B", 1, 200.0, 5.0), _det("B", 1, 201.0, 5.0, isdiffpos=-1),
        # B, r: corrected but total flux negative -> dubious; positive one fine
        _det("B", 2, 200.2, 0.1, magpsf=17.0, magnr=18.0), _det("B", 2, 201.2, 0.1, isdiffpos=-1,
                                                                magpsf=17.0, magnr=18.0),
    ]
    df = _frame(rows).sample(frac=1.0, random_state=3)  # order must not matter
    out = correct(df)
    assert list(out.index) == list(df.index)
    out = out.sort_values(["oid", "fid", "mjd"])
    assert out["corrected"].tolist() == [True, True, False, False, True, True, False, False, True, True]
    assert out["dubious"].tolist() == [False, False, True, False, True, True, False, True, False, True]
    assert out["corrected"].dtype == bool and out["dubious"].dtype == bool
    # corrected magnitudes only where corrected, NaN where not computable
    assert out.loc[~out["corrected"], ["magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext"]].isna().all().all()
    b_r = out[(out["oid"] == "B") & (out["fid"] == 2)]
    assert np.isfinite(b_r["magpsf_corr"].iloc[0]) and np.isnan(b_r["magpsf_corr"].iloc[1])


def test_first_detection_tie_broken_by_candid():
    rows = [_det("A", 1, 100.0, 3.0, candid=2), _det("A", 1, 100.0, 0.2, candid=1), _det("A", 1, 101.0, 0.2, candid=3)]
    out = correct(_frame(rows)).sort_values("candid")
    assert out["dubious"].tolist() == [False, True, False]


def test_nan_and_none_inputs_never_raise():
    rows = [_det("A", 1, 100.0, None, magnr=None), _det("A", 1, 101.0, 0.5, isdiffpos=None),
            _det("A", 1, 102.0, 0.5, magpsf=None), _det("A", 2, None, 0.5),
            _det("A", 2, 103.0, -999.0, magnr=-999.0), _det("C", None, 104.0, 0.2)]
    df = pd.DataFrame(rows).astype({"distnr": object})
    df["candid"] = range(len(df))
    out = correct(df)
    assert out["corrected"].tolist() == [False, True, True, True, False, True]
    assert np.isnan(out["magpsf_corr"].iloc[1]) and out["dubious"].iloc[1]  # unknown sign: not computable
    assert np.isnan(out["magpsf_corr"].iloc[2]) and out["dubious"].iloc[2]
    assert not np.isinf(out[["magpsf_corr", "sigmapsf_corr", "sigmapsf_corr_ext"]].to_numpy(float)).any()
    _, objects = correct_objects(df)
    assert set(objects["oid"]) == {"A", "C"}


def test_empty_batch():
    df = pd.DataFrame(columns=list(_det("A", 1, 1.0, 0.1).keys()))
    out, objects = correct_objects(df)
    assert len(out) == 0 and len(objects) == 0
    assert {"magpsf_corr", "corrected", "dubious"} <= set(out.columns)
    assert list(objects.columns) == ["oid", "corrected", "stellar", "step_id_corr"]


def test_accepts_ztf_isdiffpos_strings():
    rows = [_det("A", 1, 100.0, 0.2, isdiffpos="t"), _det("A", 1, 101.0, 0.2, isdiffpos="f", magpsf=19.0, sigmapsf=0.2),
            _det("A", 1, 102.0, 3.0, isdiffpos="0")]
    out = correct(_frame(rows))
    assert out["magpsf_corr"].iloc[0] < 17.0 < out["magpsf_corr"].iloc[1]
    assert out["dubious"].tolist() == [False, False, True]


def test_object_flags_and_stellar_rule():
    rows = [
        # S1: near ZTF ref, PS1 star near -> stellar; first detection (mjd 10) corrected
        _det("S1", 2, 10.0, 0.5, sgscore1=np.nan, distpsnr1=np.nan), _det("S1", 1, 11.0, 0.5, sgscore1=0.9, distpsnr1=0.3),
        # S2: near ZTF ref, PS1 galaxy near -> not stellar
        _det("S2", 1, 10.0, 0.5, sgscore1=0.1, distpsnr1=0.3),
        # S3: near ZTF, no PS1 (-999), point-like reference -> stellar
        _det("S3", 1, 10.0, 0.5, sgscore1=-999.0, distpsnr1=-999.0, chinr=1.0, sharpnr=0.05),
        # S4: as S3 but extended reference (sharpnr 0.3) -> not stellar
        _det("S4", 1, 10.0, 0.5, sgscore1=-999.0, distpsnr1=-999.0, chinr=1.0, sharpnr=0.3),
        # S5: PS1 source far (5"), reference chinr too large -> not stellar
        _det("S5", 1, 10.0, 0.5, sgscore1=0.99, distpsnr1=5.0, chinr=2.5, sharpnr=0.0),
        # S6: PS1 star, but first detection not near a ZTF reference -> not stellar, not corrected;
        #     later detection corrected does not change the object flag
        _det("S6", 1, 10.0, 3.0, sgscore1=0.9, distpsnr1=0.3), _det("S6", 1, 12.0, 0.5, sgscore1=0.9, distpsnr1=0.3),
        # S7: all missing
        _det("S7", 1, 10.0, None, magnr=None, chinr=None, sharpnr=None),
    ]
    df = _frame(rows)
    stellar = is_stellar(df)
    assert stellar.dtype == bool and stellar.index.name == "oid"
    assert stellar.to_dict() == {"S1": True, "S2": False, "S3": True, "S4": False, "S5": False, "S6": False,
                                 "S7": False}
    _, objects = correct_objects(df)
    objects = objects.set_index("oid")
    assert objects["corrected"].to_dict() == {"S1": True, "S2": True, "S3": True, "S4": True, "S5": True,
                                              "S6": False, "S7": False}
    assert (objects["stellar"] == stellar).all()
    assert (objects["step_id_corr"] == CORRECTION_VERSION).all()


def test_thresholds_are_alerce_constants():
    assert correction.DISTANCE_THRESHOLD == 1.4 and correction.SCORE_THRESHOLD == 0.4
    assert correction.CHINR_THRESHOLD == 2 and (correction.SHARPNR_MIN, correction.SHARPNR_MAX) == (-0.13, 0.1)


def test_real_packets_row_by_row(ztf_detections):
    """Every real detection: the vectorised result equals the scalar flux-space computation."""
    out = correct(ztf_detections)
    assert len(out) == len(ztf_detections)
    for row in out.itertuples():
        want_corr = row.distnr < 1.4
        assert row.corrected == want_corr
        if want_corr:
            want = expected(row.magpsf, row.sigmapsf, row.isdiffpos, row.magnr, row.sigmagnr)
            np.testing.assert_allclose([row.magpsf_corr, row.sigmapsf_corr, row.sigmapsf_corr_ext], want,
                                       rtol=1e-10, equal_nan=True)
    assert out["corrected"].any() and (~out["corrected"]).any()


@pytest.fixture(scope="module")
def ztf_detections():
    from tests.unit.steps.test_magstats import load_packets
    return load_packets()[0]


def test_dubious_clauses_one_by_one():
    """Each of ALeRCE's three clauses and ours, hand-made; the error's square root failing is not one."""
    rows = [
        # A, g: first corrected. 1 fine; 2 not corrected -> dubious (first corrected, this not)
        _det("A", 1, 1.0, 0.3, candid=1), _det("A", 1, 2.0, 2.0, candid=2),
        # A, r: first not corrected. 3 fine (negative? no); 4 corrected -> dubious (first not, this is)
        _det("A", 2, 1.0, 2.0, candid=3), _det("A", 2, 2.0, 0.3, candid=4),
        # B, g: never corrected. 5 positive fine; 6 negative without reference -> dubious
        _det("B", 1, 1.0, 2.0, candid=5), _det("B", 1, 2.0, 2.0, isdiffpos=-1, candid=6),
        # B, r: always corrected. 7 negative but total flux positive: fine;
        # 8 reference 17.0 minus difference 16.9: total flux negative -> dubious (ours)
        _det("B", 2, 1.0, 0.3, isdiffpos=-1, magpsf=19.0, candid=7),
        _det("B", 2, 2.0, 0.3, isdiffpos=-1, magpsf=16.9, candid=8),
        # C, g: corrected, reference error 0.05 at 15 mag exceeds difference error 0.01 at 18 mag:
        # sigmapsf_corr undefined, nothing else
        _det("C", 1, 1.0, 0.3, magpsf=18.0, sigmapsf=0.01, magnr=15.0, sigmagnr=0.05, candid=9),
    ]
    out = correct(_frame(rows)).set_index("candid")
    assert out["dubious"].to_dict() == {1: False, 2: True, 3: False, 4: True, 5: False, 6: True, 7: False,
                                        8: True, 9: False}
    # hand values: 7 is 10^(-6.8) - 10^(-7.6) in flux, 8 is 10^(-6.8) - 10^(-6.76) < 0
    assert out.loc[7, "magpsf_corr"] == pytest.approx(-2.5 * math.log10(10 ** -6.8 - 10 ** -7.6), abs=1e-12)
    assert np.isnan(out.loc[8, "magpsf_corr"]) and out.loc[8, "corr_note"] == correction.NOTE_FLUX_NOT_POSITIVE
    # 9: (10^-7.2 * 0.01)^2 - (10^-6 * 0.05)^2 < 0
    assert np.isnan(out.loc[9, "sigmapsf_corr"]) and out.loc[9, "corr_note"] == correction.NOTE_NEGATIVE_VARIANCE
    assert out.loc[9, "magpsf_corr"] == pytest.approx(-2.5 * math.log10(10 ** -6 + 10 ** -7.2), abs=1e-12)
    assert out.loc[9, "sigmapsf_corr_ext"] == pytest.approx(10 ** -7.2 * 0.01 / (10 ** -6 + 10 ** -7.2), rel=1e-12)


def test_first_is_the_whole_light_curve_not_the_batch():
    """A band's first detection is the earliest of everything stored: an earlier, uncorrected detection
    arriving later (an older alert ingested late) makes the stored corrected ones dubious."""
    stored = [_det("A", 1, 10.0, 0.3, candid=10), _det("A", 1, 11.0, 0.3, candid=11)]
    assert not correct(_frame(stored))["dubious"].any()
    earlier = _det("A", 1, 5.0, 2.0, candid=5)
    out = correct(_frame(stored + [earlier])).set_index("candid")
    assert out["dubious"].to_dict() == {10: True, 11: True, 5: False}


def test_real_packets_dubious_rule(ztf_detections):
    """On real packets: dubious is exactly ALeRCE's clauses (restated here) plus 'no corrected magnitude';
    a failed error root is common there and flags nothing."""
    out = correct(ztf_detections)
    order = out.sort_values(["oid", "fid", "mjd", "candid"])
    first = order.groupby(["oid", "fid"])["corrected"].transform("first").reindex(out.index)
    corr, neg = out["corrected"], out["isdiffpos"] == -1
    want = (~corr & neg) | (first & ~corr) | (~first & corr) | (corr & out["magpsf_corr"].isna())
    assert (out["dubious"] == want).all()
    root_failed = corr & out["magpsf_corr"].notna() & out["sigmapsf_corr"].isna()
    assert root_failed.sum() > 0.2 * corr.sum()
    assert not out.loc[root_failed & (first == corr), "dubious"].any()
    assert (out["dubious"] & corr).sum() < 0.03 * corr.sum()


def test_flag_summary_and_alerce_chained_sharpnr():
    """ALeRCE's ``(-0.13 < s) < 0.1`` compares a bool with 0.1: True exactly where s > -0.13 is False."""
    rows = [
        _det("P", 1, 1.0, 0.3, sharpnr=0.05, candid=1),   # point-like: ours stellar, chained not
        _det("Q", 1, 1.0, 0.3, sharpnr=-0.2, candid=2),   # ours not, chained stellar
        _det("R", 1, 1.0, 0.3, sharpnr=0.3, candid=3),    # neither
        _det("R", 2, 1.0, 2.0, isdiffpos=-1, candid=4),   # not corrected, negative: dubious
        _det("S", 1, 1.0, 0.3, magpsf=16.9, isdiffpos=-1, candid=5),  # no corrected magnitude: dubious
        _det("T", 1, 1.0, 0.3, magpsf=18.0, sigmapsf=0.01, magnr=15.0, sigmagnr=0.05, sharpnr=0.5, candid=6),
    ]
    summary = correction.flag_summary(correct(_frame(rows)))
    assert summary == {
        "detections": 6, "corrected": 5, "dubious": 2, "dubious_corrected": 1, "corrected_no_magnitude": 1,
        "corrected_no_error": 1,
        # stellar: ours P and S (sharpnr 0), chained only Q: sharpnr 0 is outside ALeRCE's chained window
        "objects": 5, "objects_stellar": 2, "objects_stellar_chained_sharpnr": 1, "objects_stellar_differs": 3,
        "bands": 6, "bands_stellar": 2, "bands_stellar_chained_sharpnr": 1, "bands_stellar_differs": 3,
    }
