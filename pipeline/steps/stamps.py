"""Stamp classifier: ALeRCE's rotation-invariant CNN on the first alert of each new object.

Carrasco-Davis et al. 2021, AJ 162, 231 ("Alert classification for the ALeRCE broker system: the
real-time stamp classifier"); deployed as alercebroker/pipeline ``stamp_classifier_step``. Five classes:
AGN, SN, VS (variable star), asteroid, bogus.

Inputs, as ALeRCE prepares them:
- the science, reference (template) and difference cutouts (gzipped FITS, 63x63), stacked as 3
  channels, centre-cropped to 21x21; each image normalised on its own, ``(x - min) / max(x - min)``
  with NaN ignored, then NaN -> 0 (that order);
- 23 metadata features (``FEATURE_NAMES``, ALeRCE's order) taken from the alert's candidate; ``isdiffpos``
  is 0 for 't' and 1 for 'f' (ALeRCE's encoding); ecliptic and galactic coordinates from ra/dec
  (astropy; mean ecliptic and equinox of J2000, as ALeRCE's ``ephem`` call);
  ``non_detections = ncovhist - ndethist``; clipped as ALeRCE clips (``FEATURE_CLIP``), then
  z-scored with the training set's mean and standard deviation (saved with the model). A value
  the alert lacks becomes the training mean (0 after scaling).

Network (``build_network``): the image stack rotated by 0, 90, 180 and 270 degrees; one shared trunk on
each (zero-pad 3; conv 32 4x4 valid; conv 32 3x3; max-pool 2; conv 64 3x3 x3; max-pool 2; flatten;
dense 64 + dropout); cyclic average pooling over the four rotations; batch-normalised metadata
concatenated; dense 64, dense 64 (ReLU, dropout 0.5); softmax over the five classes. Averaging
over the cyclic group makes the output invariant to 90-degree rotations of all three cutouts.
Loss: cross-entropy minus ``beta`` times the mean entropy of the predicted distribution
(entropy regularisation, beta = 0.5 in ALeRCE's deployed model), which keeps the softmax from
collapsing onto one class with overconfident probabilities.

TensorFlow is imported only by the functions that need it, so importing this module is cheap.
"""
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.surveys.cutouts import BadCutout, CutoutTooLarge, cutout_image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter; errors still show
log = logging.getLogger(__name__)

CLASSIFIER_NAME = "stamp_classifier"
CLASSES = ("AGN", "SN", "VS", "asteroid", "bogus")
CUTOUT_KEYS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
STAMP_SIZE = 63
CROP_SIZE = 21
#: ZTF CCD-quadrant image size (x, y) in pixels; a cutout near an edge is cut short on that side.
QUADRANT_SHAPE_XY = (3072, 3080)
ENTROPY_BETA = 0.5
DROP_RATE = 0.5

FEATURE_NAMES = (
    "sgscore1", "distpsnr1", "sgscore2", "distpsnr2", "sgscore3", "distpsnr3",
    "isdiffpos", "fwhm", "magpsf", "sigmapsf", "ra", "dec", "diffmaglim", "classtar",
    "ndethist", "ncovhist", "ecl_lat", "ecl_long", "gal_lat", "gal_long",
    "non_detections", "chinr", "sharpnr",
)
#: (low, high) per feature; None leaves that side open (ALeRCE's "min"/"max").
FEATURE_CLIP = {
    "sgscore1": (-1, None), "distpsnr1": (-1, None),
    "sgscore2": (-1, None), "distpsnr2": (-1, None),
    "sgscore3": (-1, None), "distpsnr3": (-1, None),
    "fwhm": (None, 10), "ndethist": (None, 20), "ncovhist": (None, 3000),
    "chinr": (-1, 15), "sharpnr": (-1, 1.5), "non_detections": (None, 2000),
}
#: Candidate fields read from the alert (the rest of FEATURE_NAMES are derived).
CANDIDATE_FIELDS = tuple(
    name for name in FEATURE_NAMES if name not in ("ecl_lat", "ecl_long", "gal_lat", "gal_long", "non_detections")
)


class BadStamp(ValueError):
    """A cutout that cannot be used (missing, not FITS, wrong shape, all NaN); ``reason`` says which."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
def decode_cutout(stamp_bytes, name="cutout", position=None):
    """The 63x63 image (float32) of a gzipped (or plain) FITS cutout, read with astropy.

    A cutout cut short by the CCD edge is padded back to 63x63 with NaN on the edge's side, which
    ``position`` (the candidate's xpos, ypos on the quadrant) gives; without it such a cutout is bad.
    """
    from astropy.io.fits.verify import VerifyWarning

    if not stamp_bytes:
        raise BadStamp(f"{name} missing")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            image = np.asarray(cutout_image(stamp_bytes), dtype=np.float32)
    except CutoutTooLarge as exc:
        raise BadStamp(f"{name} too large: {exc}") from None
    except BadCutout as exc:
        raise BadStamp(f"{name} unreadable: {exc}") from None
    if image.shape != (STAMP_SIZE, STAMP_SIZE):
        image = pad_edge_cutout(image, position, name)
    return image


def pad_edge_cutout(image, position, name="cutout"):
    """A cutout shorter than 63 along an axis (the CCD edge cut it) padded with NaN on that edge's side.

    The side is the nearer quadrant edge to the candidate (``position`` = xpos, ypos); axis 0 is y, axis 1 x.
    """
    expected = f"expected ({STAMP_SIZE}, {STAMP_SIZE})"
    short = image.ndim == 2 and all(CROP_SIZE <= n <= STAMP_SIZE for n in image.shape)
    if not short:
        raise BadStamp(f"{name} has shape {image.shape}, {expected}")
    if position is None or not all(v is not None and np.isfinite(v) for v in position):
        raise BadStamp(f"{name} has shape {image.shape}, {expected}; no xpos/ypos to tell which CCD edge cut it")
    pad = []
    for n, coordinate, quadrant_size in zip(image.shape, position[::-1], QUADRANT_SHAPE_XY[::-1]):
        missing = STAMP_SIZE - n
        pad.append((missing, 0) if coordinate < quadrant_size / 2 else (0, missing))
    return np.pad(image, pad, constant_values=np.nan)


def decode_stack(cutouts, position=None):
    """The (63, 63, 3) stack of science, template, difference from their FITS bytes (dict or tuple);
    ``position`` (xpos, ypos) places cutouts cut short by the CCD edge (see ``pad_edge_cutout``)."""
    if isinstance(cutouts, dict):
        cutouts = [cutouts.get(key) for key in CUTOUT_KEYS]
    stack = np.stack([decode_cutout(data, key, position) for data, key in zip(cutouts, CUTOUT_KEYS)], axis=-1)
    if np.isnan(stack[..., 0]).all() or np.isnan(stack[..., 2]).all():
        raise BadStamp("science or difference cutout is entirely NaN")
    return stack


def crop_center(images, size=CROP_SIZE):
    """Centre crop of (n, h, w, c) images: rows/columns ``h//2 - size//2`` to ``h//2 + size//2`` inclusive."""
    h = images.shape[1]
    start = h // 2 - size // 2
    return images[:, start:start + size, start:start + size, :]


def normalise_images(images):
    """Each (sample, channel) image to [0, 1]: (x - nanmin) / nanmax(x - nanmin); then NaN -> 0.

    A constant image becomes all 0 (0/0 -> NaN -> 0), as in ALeRCE's preprocessing.
    """
    images = np.array(images, dtype=np.float32, copy=True)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        images -= np.nanmin(images, axis=(1, 2), keepdims=True)
        images /= np.nanmax(images, axis=(1, 2), keepdims=True)
    images[~np.isfinite(images)] = 0.0
    return images


def preprocess_images(stacks):
    """(n, 63, 63, 3) raw stacks -> (n, 21, 21, 3) network input."""
    stacks = np.asarray(stacks, dtype=np.float32)
    if stacks.ndim == 3:
        stacks = stacks[np.newaxis]
    return normalise_images(crop_center(stacks))


# ------------------------------------------------------------------------------------------------
# Metadata
# ------------------------------------------------------------------------------------------------
def isdiffpos_code(value):
    """ALeRCE's encoding: 't' (positive difference) -> 0, 'f' -> 1; also accepts +1/-1 and '1'/'0'."""
    if value is None:
        return np.nan
    if isinstance(value, str):
        return {"t": 0.0, "1": 0.0, "f": 1.0, "0": 1.0}.get(value.strip().lower(), np.nan)
    value = float(value)
    return 0.0 if value > 0 else 1.0 if value < 0 else np.nan


def sky_coordinates(ra, dec):
    """Ecliptic (mean ecliptic and equinox J2000) and galactic latitude/longitude in degrees."""
    from astropy import units as u
    from astropy.coordinates import BarycentricMeanEcliptic, SkyCoord

    sky = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg, frame="icrs")
    ecl = sky.transform_to(BarycentricMeanEcliptic(equinox="J2000"))
    gal = sky.galactic
    return {
        "ecl_lat": ecl.lat.deg, "ecl_long": ecl.lon.deg,
        "gal_lat": gal.b.deg, "gal_long": gal.l.deg,
    }


def metadata_features(candidates):
    """The 23 raw features (FEATURE_NAMES order) of alert candidates (dicts or a DataFrame).

    Missing values (None; ZTF's -999 stays -999 and the clipping takes it to -1 where ALeRCE clips) are NaN.
    """
    frame = pd.DataFrame(candidates) if not isinstance(candidates, pd.DataFrame) else candidates.copy()
    out = pd.DataFrame(index=range(len(frame)))
    for name in CANDIDATE_FIELDS:
        values = frame[name] if name in frame else pd.Series([None] * len(frame))
        if name == "isdiffpos":
            out[name] = [isdiffpos_code(v) for v in values]
        else:
            out[name] = pd.to_numeric(pd.Series(list(values)), errors="coerce").astype(float).to_numpy()
    if len(out):
        out = out.assign(**sky_coordinates(out["ra"].to_numpy(), out["dec"].to_numpy()))
    else:
        out = out.assign(ecl_lat=[], ecl_long=[], gal_lat=[], gal_long=[])
    out["non_detections"] = out["ncovhist"] - out["ndethist"]
    return out[list(FEATURE_NAMES)]


def clip_features(features):
    """ALeRCE's clipping of the raw features (a DataFrame with FEATURE_NAMES columns)."""
    features = features.copy()
    for name, (low, high) in FEATURE_CLIP.items():
        features[name] = features[name].clip(lower=low, upper=high)
    return features


@dataclass
class FeatureScaler:
    """Mean and standard deviation of each clipped feature over the training set."""

    mean: dict
    std: dict

    @classmethod
    def fit(cls, features):
        clipped = clip_features(features)
        mean = {n: float(np.nanmean(clipped[n])) for n in FEATURE_NAMES}
        std = {n: float(np.nanstd(clipped[n])) or 1.0 for n in FEATURE_NAMES}
        return cls(mean, std)

    def transform(self, features):
        """(n, 23) float32: clipped, z-scored; a missing value becomes 0 (the training mean)."""
        clipped = clip_features(features)
        mean = np.array([self.mean[n] for n in FEATURE_NAMES])
        std = np.array([self.std[n] for n in FEATURE_NAMES])
        scaled = (clipped[list(FEATURE_NAMES)].to_numpy(dtype=float) - mean) / std
        return np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def as_dict(self):
        return {"features": list(FEATURE_NAMES), "clip": {k: list(v) for k, v in FEATURE_CLIP.items()},
                "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data):
        if list(data["features"]) != list(FEATURE_NAMES):
            raise ValueError("feature statistics were saved for another feature list")
        return cls(data["mean"], data["std"])


# ------------------------------------------------------------------------------------------------
# Alerts -> network input
# ------------------------------------------------------------------------------------------------
@dataclass
class PreparedBatch:
    """Network input of the usable alerts; ``rejected`` holds (index, reason) of the others."""

    index: list
    stacks: np.ndarray  # (n, 63, 63, 3) decoded cutouts
    features: pd.DataFrame  # raw metadata features of the usable alerts
    rejected: list


def prepare_alerts(alerts):
    """Decode the cutouts of alert records (dicts with 'candidate' and the three cutouts, as in the Avro).

    A cutout may be given as the Avro ``{'stampData': bytes}`` record or as bytes.
    """
    index, stacks, candidates, rejected = [], [], [], []
    for i, alert in enumerate(alerts):
        try:
            cutouts = []
            for key in CUTOUT_KEYS:
                cutout = alert.get(key)
                cutouts.append(cutout.get("stampData") if isinstance(cutout, dict) else cutout)
            candidate = alert.get("candidate")
            if not isinstance(candidate, dict):
                raise BadStamp("alert has no candidate record")
            stack = decode_stack(cutouts, (candidate.get("xpos"), candidate.get("ypos")))
        except BadStamp as exc:
            rejected.append((i, exc.reason))
            continue
        index.append(i)
        stacks.append(stack)
        candidates.append(candidate)
    stacks = np.stack(stacks) if stacks else np.zeros((0, STAMP_SIZE, STAMP_SIZE, 3), np.float32)
    return PreparedBatch(index, stacks, metadata_features(candidates), rejected)


# ------------------------------------------------------------------------------------------------
# Network (TensorFlow / Keras, imported lazily)
# ------------------------------------------------------------------------------------------------
_KERAS_OBJECTS = {}


def _keras_objects():
    """Custom layers and the loss, defined once, on first use (registered for model loading)."""
    if _KERAS_OBJECTS:
        return _KERAS_OBJECTS
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="broker_stamps")
    class RotationStack(keras.layers.Layer):
        """(n, h, w, c) -> (4n, h, w, c): the batch rotated by 0, 90, 180, 270 degrees, stacked on the batch axis."""

        def call(self, images):
            return tf.concat([tf.image.rot90(images, k=k) for k in range(4)], axis=0)

    @keras.saving.register_keras_serializable(package="broker_stamps")
    class CyclicAveragePool(keras.layers.Layer):
        """(4n, f) -> (n, f): the mean over the four rotations of each sample (Dieleman et al. 2016)."""

        def call(self, stacked):
            return tf.reduce_mean(tf.reshape(stacked, [4, -1, stacked.shape[-1]]), axis=0)

    def entropy_regularised_crossentropy(y_true, y_pred, beta=ENTROPY_BETA):
        """Mean cross-entropy minus beta times the mean entropy of the predicted probabilities."""
        p = tf.clip_by_value(y_pred, 1e-7, 1.0)
        cross_entropy = -tf.reduce_sum(tf.cast(y_true, p.dtype) * tf.math.log(p), axis=-1)
        entropy = -tf.reduce_sum(p * tf.math.log(p), axis=-1)
        return tf.reduce_mean(cross_entropy) - beta * tf.reduce_mean(entropy)

    _KERAS_OBJECTS.update(RotationStack=RotationStack, CyclicAveragePool=CyclicAveragePool,
                          loss=entropy_regularised_crossentropy)
    return _KERAS_OBJECTS


def build_network(n_features=len(FEATURE_NAMES), n_classes=len(CLASSES), seed=0):
    """The Keras model: inputs ``images`` (n, 21, 21, 3) and ``features`` (n, 23); output probabilities."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    custom = _keras_objects()
    images = keras.Input((CROP_SIZE, CROP_SIZE, 3), name="images")
    features = keras.Input((n_features,), name="features")

    trunk = keras.Sequential(
        [
            keras.Input((CROP_SIZE, CROP_SIZE, 3)),
            layers.ZeroPadding2D(3),
            layers.Conv2D(32, 4, padding="valid", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(DROP_RATE),
        ],
        name="shared_trunk",
    )
    rotated = custom["RotationStack"](name="rotations")(images)
    pooled = custom["CyclicAveragePool"](name="cyclic_avg_pool")(trunk(rotated))
    meta = layers.BatchNormalization(name="batchnorm_features")(features)
    x = layers.Concatenate(name="dense_with_features")([pooled, meta])
    for i in (2, 3):
        x = layers.Dense(64, activation="relu", name=f"dense_{i}")(x)
        x = layers.Dropout(DROP_RATE, name=f"dropout_{i}")(x)
    output = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model([images, features], output, name="stamp_classifier")


def entropy_regularised_loss():
    return _keras_objects()["loss"]


def device_description():
    """'GPU: <name>' when TensorFlow sees a GPU, else 'CPU (no GPU visible to TensorFlow)'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return "CPU (no GPU visible to TensorFlow)"


# ------------------------------------------------------------------------------------------------
# The fitted artefact
# ------------------------------------------------------------------------------------------------
MODEL_FILE = "model.keras"
META_FILE = "model.json"


class StampClassifier:
    """A trained network with its feature statistics and version; ``predict_proba`` on alerts."""

    def __init__(self, model, scaler, version, meta=None):
        self.model = model
        self.scaler = scaler
        self.version = version
        self.meta = meta or {}
        self._predict = None

    @classmethod
    def load(cls, folder):
        import keras

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("classes") != list(CLASSES):
            raise ValueError(f"model in {folder} predicts {meta.get('classes')}, expected {list(CLASSES)}")
        _keras_objects()
        model = keras.saving.load_model(folder / MODEL_FILE, compile=False)
        return cls(model, FeatureScaler.from_dict(meta["feature_stats"]), meta["version"], meta)

    def save(self, folder, extra_meta=None):
        """Write the network (without optimizer state) and model.json (version, classes, statistics)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        clean = build_network()
        clean.set_weights(self.model.get_weights())
        clean.save(folder / MODEL_FILE)
        meta = {**self.meta, **(extra_meta or {}), "version": self.version, "classes": list(CLASSES),
                "classifier_name": CLASSIFIER_NAME, "feature_stats": self.scaler.as_dict()}
        (folder / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        self.meta = meta

    def predict_arrays(self, images, features, batch_size=512):
        """Probabilities (n, 5) for preprocessed images (n, 21, 21, 3) and scaled features (n, 23)."""
        import tensorflow as tf

        if self._predict is None:
            self._predict = tf.function(lambda x, f: self.model([x, f], training=False), reduce_retracing=True)
        out = []
        for start in range(0, len(images), batch_size):
            x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
            f = tf.convert_to_tensor(features[start:start + batch_size], tf.float32)
            out.append(self._predict(x, f).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)), np.float32)

    def predict_proba(self, stacks, raw_features, batch_size=512):
        """Probabilities for decoded (n, 63, 63, 3) cutout stacks and raw metadata features."""
        return self.predict_arrays(preprocess_images(stacks), self.scaler.transform(raw_features), batch_size)


def probability_rows(oids, probabilities, version):
    """Probability-table rows (ALeRCE's columns): one per (oid, class), ranking 1 = most probable."""
    probabilities = np.asarray(probabilities, dtype=float)
    ranks = (-probabilities).argsort(axis=1).argsort(axis=1) + 1
    rows = []
    for oid, probs, rank in zip(oids, probabilities, ranks):
        for class_name, p, r in zip(CLASSES, probs, rank):
            rows.append(dict(oid=oid, classifier_name=CLASSIFIER_NAME, classifier_version=version,
                             class_name=class_name, probability=float(p), ranking=int(r)))
    return rows
