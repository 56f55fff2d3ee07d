"""Stamp classifier: ALeRCE's preprocessing and features by hand, the weak-label rule, the simulator's format,
and the committed model (rotation invariance, probabilities, its recorded score on ALeRCE's stamps)."""
import gzip
import io
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.simulation.stamps import simulate_alert, simulate_alerts, to_fits_gz
from pipeline.steps import stamps as S
from pipeline.training.stamp_classifier import alerce_test_stamps, weak_label
from tests.conftest import REPO_ROOT, require_shared

MODEL_DIR = REPO_ROOT / "models" / "stamp_classifier"


def fits_gz(array):
    from astropy.io import fits

    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(array, ">f4")).writeto(buffer)
    return gzip.compress(buffer.getvalue())


def test_crop_takes_the_central_21_pixels_of_63():
    images = np.arange(63 * 63, dtype=float).reshape(1, 63, 63, 1)
    crop = S.crop_center(images)
    assert crop.shape == (1, 21, 21, 1)
    # rows and columns 21..41: the centre pixel (31, 31) is the crop's (10, 10)
    assert crop[0, 0, 0, 0] == 21 * 63 + 21 and crop[0, 10, 10, 0] == 31 * 63 + 31 and crop[0, -1, -1, 0] == 41 * 63 + 41


def test_each_image_is_scaled_to_0_1_on_its_own_then_nan_becomes_0():
    images = np.zeros((1, 2, 2, 3), np.float32)
    images[0, :, :, 0] = [[2, 4], [6, np.nan]]  # min 2, max-min 4
    images[0, :, :, 1] = [[-10, -10], [-10, -10]]  # constant -> 0/0 -> 0
    images[0, :, :, 2] = [[0, 100], [50, 25]]
    out = S.normalise_images(images)
    np.testing.assert_allclose(out[0, :, :, 0], [[0, 0.5], [1, 0]])
    np.testing.assert_allclose(out[0, :, :, 1], 0)
    np.testing.assert_allclose(out[0, :, :, 2], [[0, 1], [0.5, 0.25]])


def test_metadata_features_follow_alerces_encoding_and_clipping():
    candidate = dict(sgscore1=-999.0, distpsnr1=-999.0, sgscore2=0.5, distpsnr2=3.0, sgscore3=1.0, distpsnr3=9.0,
                     isdiffpos="f", fwhm=12.0, magpsf=19.0, sigmapsf=0.1, ra=0.0, dec=0.0, diffmaglim=20.5,
                     classtar=0.9, ndethist=25, ncovhist=3500, chinr=20.0, sharpnr=-3.0)
    raw = S.metadata_features([candidate, {**candidate, "isdiffpos": "t"}])
    assert list(raw.columns) == list(S.FEATURE_NAMES) and len(S.FEATURE_NAMES) == 23
    assert raw["isdiffpos"].tolist() == [1.0, 0.0]  # ALeRCE: 'f' -> 1, 't' -> 0
    assert raw["non_detections"][0] == 3500 - 25
    # (0, 0) in ICRS: galactic l = 96.337, b = -60.189; ecliptic lon 0, lat 0
    assert raw["gal_long"][0] == pytest.approx(96.337, abs=1e-3) and raw["gal_lat"][0] == pytest.approx(-60.189, abs=1e-3)
    assert raw["ecl_long"][0] == pytest.approx(0.0, abs=1e-3) and raw["ecl_lat"][0] == pytest.approx(0.0, abs=1e-3)
    clipped = S.clip_features(raw).iloc[0]
    assert clipped["sgscore1"] == -1 and clipped["distpsnr1"] == -1 and clipped["sgscore3"] == 1.0
    assert clipped["fwhm"] == 10 and clipped["ndethist"] == 20 and clipped["ncovhist"] == 3000
    assert clipped["chinr"] == 15 and clipped["sharpnr"] == -1 and clipped["non_detections"] == 2000


def test_scaler_z_scores_clipped_features_and_missing_values_become_the_mean():
    frame = pd.DataFrame({n: [1.0, 3.0] for n in S.FEATURE_NAMES})
    scaler = S.FeatureScaler.fit(frame)
    assert scaler.mean["magpsf"] == 2.0 and scaler.std["magpsf"] == 1.0
    missing = frame.iloc[:1].copy()
    missing["magpsf"] = np.nan
    out = S.FeatureScaler.from_dict(json.loads(json.dumps(scaler.as_dict()))).transform(missing)
    assert out[0, S.FEATURE_NAMES.index("magpsf")] == 0.0 and out[0, 0] == -1.0


def test_coordinates_match_alerces_values_on_its_stamps():
    frame = pd.read_parquet(require_shared("labeled", "alerce_stamps51", "stamps.parquet"))
    mine = S.metadata_features(frame)
    for name in ("ecl_lat", "ecl_long", "gal_lat", "gal_long", "non_detections"):
        np.testing.assert_allclose(mine[name], frame[name], atol=1e-3)


def test_bad_cutouts_raise_with_a_reason():
    good = fits_gz(np.ones((63, 63)))
    with pytest.raises(S.BadStamp, match="missing"):
        S.decode_stack([good, None, good])
    with pytest.raises(S.BadStamp, match="unreadable"):
        S.decode_stack([good, good, gzip.compress(b"not a FITS file" * 100)])
    with pytest.raises(S.BadStamp, match="no xpos/ypos"):
        S.decode_stack([good, fits_gz(np.ones((50, 63))), good])
    with pytest.raises(S.BadStamp, match="shape"):
        S.decode_stack([good, fits_gz(np.ones((70, 63))), good], position=(1000.0, 1000.0))
    with pytest.raises(S.BadStamp, match="shape"):
        S.decode_stack([good, fits_gz(np.ones((63, 63, 2))), good], position=(1000.0, 1000.0))
    with pytest.raises(S.BadStamp, match="NaN"):
        S.decode_stack([fits_gz(np.full((63, 63), np.nan)), good, good])
    assert S.decode_stack([good, good, good]).shape == (63, 63, 3)


def test_a_cutout_cut_by_the_ccd_edge_is_padded_on_that_edge_side():
    full = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)  # rows are y, columns x
    # near the high-x edge (xpos 3049.4 of 3072): ZTF keeps columns 0..54
    padded = S.pad_edge_cutout(full[:, :55], (3049.4, 1500.0))
    assert padded.shape == (63, 63) and np.isnan(padded[:, 55:]).all()
    np.testing.assert_array_equal(padded[:, :55], full[:, :55])
    # near the low-y edge (ypos 12.3): the first 20 rows are missing; the alert stays at the centre pixel
    padded = S.pad_edge_cutout(full[20:, :], (2225.8, 12.3))
    assert np.isnan(padded[:20]).all() and padded[31, 31] == full[31, 31]
    # a corner: both axes
    padded = S.pad_edge_cutout(full[10:, :60], (3060.0, 20.0))
    assert np.isnan(padded[:10]).all() and np.isnan(padded[:, 60:]).all() and padded[31, 31] == full[31, 31]


def test_every_real_packet_with_cutouts_is_usable_including_ccd_edge_ones():
    from pipeline.surveys.ztf import decode_container

    folder = require_shared("ztf_alerts")
    alerts = [r for path in sorted(folder.glob("*.avro")) for r in decode_container(path.read_bytes())
              if r.get("cutoutScience")]

    def cut_short(alert):
        science = alert["cutoutScience"]
        try:
            S.decode_cutout(science["stampData"] if isinstance(science, dict) else science)
        except S.BadStamp as exc:
            return "no xpos/ypos" in exc.reason
        return False

    assert sum(map(cut_short, alerts)) == 5  # cutouts cut short by the CCD edge, once unusable
    batch = S.prepare_alerts(alerts)
    assert len(alerts) == 593 and batch.rejected == [] and batch.stacks.shape == (593, 63, 63, 3)


def test_prepare_alerts_keeps_the_good_and_names_the_bad():
    alerts = simulate_alerts({"SN": 2}, seed=3)
    alerts[1] = {**alerts[1], "cutoutTemplate": b"\x1f\x8bgarbage"}
    batch = S.prepare_alerts(alerts)
    assert batch.index == [0] and batch.stacks.shape == (1, 63, 63, 3) and len(batch.features) == 1
    assert batch.rejected[0][0] == 1 and "cutoutTemplate unreadable" in batch.rejected[0][1]


def test_a_gzip_bomb_cutout_is_rejected_with_its_reason_within_bounded_memory():
    import tracemalloc

    from pipeline.surveys.cutouts import MAX_CUTOUT_BYTES
    from tests.cutout_bombs import gzip_bomb

    alerts = simulate_alerts({"SN": 2}, seed=3)
    alerts[0] = {**alerts[0], "cutoutDifference": gzip_bomb(100 * 2**20)}
    tracemalloc.start()
    try:
        batch = S.prepare_alerts(alerts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_CUTOUT_BYTES, f"peak {peak / 2**20:.1f} MiB"
    assert batch.index == [1] and batch.rejected[0][0] == 0
    assert "cutoutDifference too large" in batch.rejected[0][1] and str(MAX_CUTOUT_BYTES) in batch.rejected[0][1]


def test_entropy_regularised_loss_is_crossentropy_minus_beta_entropy():
    import tensorflow as tf

    p = np.array([[0.5, 0.25, 0.25, 0.0, 0.0]], np.float32)
    y = np.array([[0, 1, 0, 0, 0]], np.float32)
    entropy = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    expected = -np.log(0.25) - S.ENTROPY_BETA * entropy
    assert float(S.entropy_regularised_loss()(tf.constant(y), tf.constant(p))) == pytest.approx(expected, abs=1e-4)


def test_weak_label_rule():
    near_sso = {"ssdistnr": 0.4, "ssmagnr": 19.2}
    assert weak_label(near_sso) == "asteroid"
    assert weak_label({"ssdistnr": 12.0, "ssmagnr": 19.2}) is None
    assert weak_label({"drb": 0.03}, {"cdsxmatch": "Mira"}) == "VS"  # ZTF's real-bogus score is not a label
    assert weak_label({"drb": 0.01}) is None
    assert weak_label({"ssdistnr": None}, {"cdsxmatch": "QSO"}) == "AGN"
    assert weak_label({}, {"cdsxmatch": "Unknown", "tns": "SN Ia"}) == "SN"
    assert weak_label({}, {"cdsxmatch": "Unknown", "tns": float("nan"), "vsx": "Fail 503", "gcvs": "Unknown"}) is None
    assert weak_label({}, {"cdsxmatch": "Unknown", "vsx": "M", "gcvs": "Unknown"}) == "VS"
    assert weak_label({}, {"cdsxmatch": "Mira"}) == "VS"
    assert weak_label({}, {"cdsxmatch": "Candidate_SN*", "tns": None}) is None  # a candidate is not a label


def test_simulated_cutouts_are_ztf_format_and_say_simulated():
    from astropy.io import fits

    alert = simulate_alert("asteroid", np.random.default_rng(0), 7)
    assert alert["simulated"] and alert["objectId"].startswith("ZTFSIM")
    header = fits.getheader(io.BytesIO(gzip.decompress(alert["cutoutScience"])))
    assert header["BITPIX"] == -32 and header["NAXIS1"] == header["NAXIS2"] == 63 and header["SIMULATE"]
    stack = S.decode_stack([alert[k] for k in S.CUTOUT_KEYS])
    # an asteroid: a source in the science and difference centres, none in the reference
    centre = stack[29:34, 29:34]
    assert centre[..., 0].max() > np.median(stack[..., 0]) + 5 * np.std(stack[:10, :10, 2])
    assert centre[..., 1].max() < np.median(stack[..., 1]) + 0.5 * (centre[..., 0].max() - np.median(stack[..., 0]))
    assert to_fits_gz(np.zeros((63, 63)))[:2] == b"\x1f\x8b"


@pytest.fixture(scope="module")
def committed_model():
    if not (MODEL_DIR / S.MODEL_FILE).exists():
        pytest.fail(f"the committed stamp classifier is missing: {MODEL_DIR}")
    return S.StampClassifier.load(MODEL_DIR)


def test_committed_model_is_small_and_versioned(committed_model):
    meta = json.loads((MODEL_DIR / S.META_FILE).read_text())
    assert (MODEL_DIR / S.MODEL_FILE).stat().st_size < 5 * 2**20
    assert committed_model.version == meta["version"] and meta["classes"] == list(S.CLASSES)
    assert (MODEL_DIR / "model_card.md").exists() and (MODEL_DIR / "confusion_validation.png").exists()
    # it is what `train_stamp_classifier` with its defaults writes (a retrain must bump the default version)
    from pipeline.management.commands.train_stamp_classifier import Command

    defaults = Command().create_parser("manage.py", "train_stamp_classifier").parse_args([])
    assert (meta["version"], meta["seed"], meta["epochs"], meta["sim_per_class"], meta["batch_size"]) == (
        defaults.model_version, defaults.seed, defaults.epochs, defaults.sim_per_class, defaults.batch_size)


def test_probabilities_unchanged_when_the_three_cutouts_are_rotated_by_90_degrees(committed_model):
    alerts = simulate_alerts(2, seed=11)
    batch = S.prepare_alerts(alerts)
    probs = committed_model.predict_proba(batch.stacks, batch.features)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    for k in (1, 2, 3):
        rotated = np.rot90(batch.stacks, k, axes=(1, 2))
        np.testing.assert_allclose(committed_model.predict_proba(rotated, batch.features), probs, atol=1e-5)
    # but the probabilities do depend on the images: a flipped-sign difference changes them
    flipped = batch.stacks.copy()
    flipped[..., 2] *= -1
    assert np.abs(committed_model.predict_proba(flipped, batch.features) - probs).max() > 1e-3


def test_committed_model_scores_what_its_card_says_on_alerces_36_stamps(committed_model):
    shared = require_shared("labeled", "alerce_stamps51", "stamps.parquet").parents[2]
    alerts = alerce_test_stamps(shared)
    batch = S.prepare_alerts(alerts)
    probs = committed_model.predict_proba(batch.stacks, batch.features)
    truth = np.array([S.CLASSES.index(a["class"]) for a in alerts])
    n_correct = int((probs.argmax(axis=1) == truth).sum())
    assert len(alerts) == 36 and not batch.rejected
    assert n_correct == committed_model.meta["test_alerce_stamps51"]["n_correct"]


def test_probability_rows_rank_the_classes():
    rows = S.probability_rows(["ZTF1"], [[0.1, 0.5, 0.2, 0.15, 0.05]], "1.0.0")
    assert [r["class_name"] for r in rows] == list(S.CLASSES)
    assert [r["ranking"] for r in rows] == [4, 1, 2, 3, 5]
    assert {r["classifier_name"] for r in rows} == {"stamp_classifier"} and rows[0]["classifier_version"] == "1.0.0"


def test_importing_the_pipeline_does_not_load_tensorflow():
    import subprocess
    import sys

    code = (
        "import django, os, sys; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'broker_site.settings'); django.setup();"
        "import pipeline.workflow.step_tasks, pipeline.workflow.ops_tasks, pipeline.workflow.canvas, pipeline.workflow.stamp_step,"
        " pipeline.steps.stamps, pipeline.simulation.stamps;"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_train_command_writes_model_version_and_card(tmp_path):
    from django.core.management import call_command

    require_shared("labeled", "fink_xmatch_weak", "labels.csv")
    call_command("train_stamp_classifier", "--out", str(tmp_path), "--sim-per-class", "6", "--epochs", "1",
                 "--seed", "3", "--model-version", "0.0.1-test", stdout=io.StringIO())
    meta = json.loads((tmp_path / S.META_FILE).read_text())
    assert meta["version"] == "0.0.1-test" and meta["seed"] == 3
    real = {c: sum(meta["data"][c]["real"].values()) for c in S.CLASSES}
    assert real == {"AGN": 8, "SN": 10, "VS": 36, "asteroid": 63, "bogus": 0}  # the weak-label rule's yield
    assert all(sum(meta["data"][c]["simulated"].values()) == 6 for c in S.CLASSES)
    assert meta["test_alerce_stamps51"]["n"] == 36
    assert sum(meta["validation_real"]["support"]) == sum(meta["data"][c]["real"]["validation"] for c in S.CLASSES) > 0
    card = (tmp_path / "model_card.md").read_text()
    assert "SIMULATED" in card and "Weak labels of real alerts" in card
    assert (tmp_path / "confusion_alerce_stamps51.png").read_bytes()[:4] == b"\x89PNG"
    assert S.StampClassifier.load(tmp_path).version == "0.0.1-test"
