"""Cross-match of objects with the AllWISE catalogue (Cutri et al. 2013, VizieR II/328/allwise).

Every backend answers one question: for each object (``oid, ra, dec`` in degrees, ICRS/J2000),
which catalogue source is the NEAREST one within ``radius_arcsec``? Objects with no source within
the radius are absent from the answer. The answer has :data:`MATCH_COLUMNS`:
``oid, catalog, catid, dist`` (arcsec), ``ra, dec`` of the source, and the AllWISE photometry under
the names CDS gives it (VizieR II/328/allwise): ``W1mag, e_W1mag, ... W4mag, e_W4mag`` (the
profile-fit ``w?mpro``/``w?sigmpro``) and 2MASS ``Jmag, e_Jmag, Hmag, e_Hmag, Kmag, e_Kmag``.

Backends (chosen by the ``XMATCH_BACKEND`` setting through :func:`get_xmatch_backend`):

- :class:`LocalCatalogBackend` -- cone search in a local index built by :func:`build_local_index`:
  a k-d tree on unit vectors, so distances are chords ``c = 2 sin(theta/2)`` and the search is
  exact across RA = 0 and at the poles; separations are then recomputed with the Vincenty formula.
- :class:`CdsXmatchBackend` -- the CDS X-Match service (Pineau et al. 2011) through
  ``astroquery.xmatch``; failures after retries raise :class:`XmatchUnavailable`.

Plain numpy/pandas: no Django, no Celery.
"""
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ALLWISE_PHOTOMETRY",
    "INDEX_FORMAT",
    "MATCH_COLUMNS",
    "CdsXmatchBackend",
    "LocalCatalogBackend",
    "XmatchBackend",
    "XmatchUnavailable",
    "angular_separation_arcsec",
    "build_local_index",
    "get_xmatch_backend",
    "normalise_catalog",
    "parse_cds_response",
    "read_catalog_table",
]

CATALOG = "allwise"
CDS_ALLWISE_TABLE = "vizier:II/328/allwise"

#: AllWISE photometry, named as in CDS's II/328/allwise (and so in the X-Match output).
ALLWISE_PHOTOMETRY = [
    "W1mag", "e_W1mag", "W2mag", "e_W2mag", "W3mag", "e_W3mag", "W4mag", "e_W4mag",
    "Jmag", "e_Jmag", "Hmag", "e_Hmag", "Kmag", "e_Kmag",
]
MATCH_COLUMNS = ["oid", "catalog", "catid", "dist", "ra", "dec"] + ALLWISE_PHOTOMETRY

#: Version tag written into (and required from) every local index file.
INDEX_FORMAT = "broker-xmatch-index/1"

# Accepted spellings, first match wins (exact name, then case-insensitive).
RA_NAMES = ["ra", "RAJ2000", "_RAJ2000", "RA_ICRS", "RAICRS", "RAdeg", "ra_deg", "alpha",
            "RA_J2000"]
DEC_NAMES = ["dec", "DEJ2000", "DECJ2000", "_DEJ2000", "DE_ICRS", "DEC_ICRS", "DEICRS", "DEdeg",
             "dec_deg", "delta", "DEC_J2000", "de"]
ID_NAMES = ["catid", "AllWISE", "designation", "source_id", "source_name", "oid_catalog", "name",
            "id", "cntr"]
# Our (CDS) photometry name -> other spellings: IRSA's AllWISE source table and ALeRCE's database.
PHOTOMETRY_ALIASES = {
    "W1mag": ["w1mpro"], "e_W1mag": ["w1sigmpro"],
    "W2mag": ["w2mpro"], "e_W2mag": ["w2sigmpro"],
    "W3mag": ["w3mpro"], "e_W3mag": ["w3sigmpro"],
    "W4mag": ["w4mpro"], "e_W4mag": ["w4sigmpro"],
    "Jmag": ["j_m_2mass"], "e_Jmag": ["j_msig_2mass"],
    "Hmag": ["h_m_2mass"], "e_Hmag": ["h_msig_2mass"],
    "Kmag": ["k_m_2mass"], "e_Kmag": ["k_msig_2mass"],
}


class XmatchUnavailable(Exception):
    """The cross-match service could not answer (after retries): a transient fault.

    ``oids`` are the objects left without an answer (retry them later); ``partial`` holds the
    matches of the batches that did succeed before the failure.
    """

    def __init__(self, message, oids=(), partial=None):
        super().__init__(message)
        self.oids = list(oids)
        self.partial = partial if partial is not None else _empty_matches()


# --------------------------------------------------------------------------- geometry

def _unit_vectors(ra_deg, dec_deg):
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cos_dec = np.cos(dec)
    return np.column_stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)])


def _chord(radius_arcsec):
    """Chord length on the unit sphere subtending ``radius_arcsec``: c = 2 sin(theta / 2)."""
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def angular_separation_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle separation in arcsec (Vincenty's formula: accurate at all distances)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=float)) for a in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    sin_d1, cos_d1, sin_d2, cos_d2 = np.sin(dec1), np.cos(dec1), np.sin(dec2), np.cos(dec2)
    num1 = cos_d2 * np.sin(dra)
    num2 = cos_d1 * sin_d2 - sin_d1 * cos_d2 * np.cos(dra)
    den = sin_d1 * sin_d2 + cos_d1 * cos_d2 * np.cos(dra)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den)) * 3600.0


# --------------------------------------------------------------------------- catalogue tables

def _find_column(columns, candidates):
    columns = list(columns)
    for name in candidates:
        if name in columns:
            return name
    lower = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def normalise_catalog(table):
    """A catalogue table with our column names: ``ra``, ``dec`` (deg), ``catid`` and the
    photometry of :data:`ALLWISE_PHOTOMETRY` (those present; others are left as they are).

    Accepts ra/dec as ``ra``/``RAJ2000``/``RA_ICRS``/... and IRSA photometry names
    (``w1mpro``, ``w1sigmpro``, ``j_m_2mass``, ...).
    """
    df = table if isinstance(table, pd.DataFrame) else _to_dataframe(table)
    rename = {}
    ra = _find_column(df.columns, RA_NAMES)
    dec = _find_column(df.columns, DEC_NAMES)
    if ra is None or dec is None:
        raise ValueError(f"no ra/dec columns among {list(df.columns)}")
    rename[ra], rename[dec] = "ra", "dec"
    ident = _find_column([c for c in df.columns if c not in rename], ID_NAMES)
    if ident is not None:
        rename[ident] = "catid"
    for ours, others in PHOTOMETRY_ALIASES.items():
        found = _find_column([c for c in df.columns if c not in rename], [ours] + others)
        if found is not None:
            rename[found] = ours
    clash = [c for c in df.columns if c not in rename and c in rename.values()]
    df = df.drop(columns=clash).rename(columns=rename)
    for col in ("ra", "dec"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            try:
                df[col] = pd.to_numeric(df[col])
            except (TypeError, ValueError):
                raise ValueError(f"column {col!r} must hold decimal degrees") from None
    return df


def _to_dataframe(table):
    """astropy Table -> DataFrame: masked values become NaN/None, bytes become str,
    multidimensional columns are dropped."""
    return pd.DataFrame({name: _column_values(table, name) for name in table.colnames
                         if getattr(table[name], "ndim", 1) <= 1})


def read_catalog_table(path):
    """Read a catalogue from CSV (``.csv``, ``.tsv``, ``.txt``, gzipped too), Parquet or FITS
    (first table HDU, through astropy), normalised by :func:`normalise_catalog`."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif suffix in (".fits", ".fit", ".fts"):
        from astropy.table import Table

        df = _to_dataframe(Table.read(path, format="fits"))
    elif suffix in (".vot", ".xml"):
        from astropy.table import Table

        df = _to_dataframe(Table.read(path, format="votable"))
    elif suffix == ".tsv":
        df = pd.read_csv(path, sep="\t")
    elif suffix in (".csv", ".txt", ""):
        df = pd.read_csv(path, sep=None, engine="python") if suffix == ".txt" else pd.read_csv(path)
    else:
        raise ValueError(f"unknown catalogue format for {path.name!r}")
    return normalise_catalog(df)


# --------------------------------------------------------------------------- local index

def build_local_index(table, out_path, catalog=CATALOG):
    """Write the local cross-match index of catalogue ``table`` to ``out_path`` (``.npz``).

    ``table``: DataFrame (or astropy Table) with ra/dec in degrees, an identifier column and the
    photometry (names as accepted by :func:`normalise_catalog`; absent bands are stored as NaN).
    Rows without coordinates are dropped. The file is an uncompressed ``.npz`` (float64 ra/dec and
    photometry, fixed-width unicode ids, no pickles) written atomically; returns its path.
    """
    df = normalise_catalog(table)
    df = df[np.isfinite(df["ra"].to_numpy(float)) & np.isfinite(df["dec"].to_numpy(float))]
    dec = df["dec"].to_numpy(float)
    if np.any(np.abs(dec) > 90):
        raise ValueError("declination outside [-90, 90] degrees")
    ra = np.mod(df["ra"].to_numpy(float), 360.0)
    if "catid" in df.columns:
        catid = df["catid"].astype(str).to_numpy()
    else:
        catid = np.arange(len(df)).astype(str)
    photometry = np.column_stack([
        pd.to_numeric(df[c], errors="coerce").to_numpy(float) if c in df.columns
        else np.full(len(df), np.nan)
        for c in ALLWISE_PHOTOMETRY
    ]) if len(df) else np.empty((0, len(ALLWISE_PHOTOMETRY)))

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(INDEX_FORMAT),
        catalog=np.array(str(catalog)),
        ra=ra,
        dec=dec,
        catid=catid.astype(str) if len(catid) else np.array([], dtype="<U1"),
        photometry=photometry.astype(float),
        photometry_names=np.array(ALLWISE_PHOTOMETRY),
    )
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_path


# --------------------------------------------------------------------------- backends

def _empty_matches():
    df = pd.DataFrame({c: pd.Series(dtype=float) for c in MATCH_COLUMNS})
    for col in ("oid", "catalog", "catid"):
        df[col] = df[col].astype(object)
    return df


def _finalise(found, objects, radius_arcsec, catalog=CATALOG):
    """Rows within the radius, nearest per oid, in the objects' order, as MATCH_COLUMNS."""
    if found is None or found.empty:
        return _empty_matches()
    found = found[found["dist"] <= radius_arcsec]
    found = _nearest_per_oid(found)
    order = {oid: i for i, oid in enumerate(objects["oid"].drop_duplicates())}
    found = found.assign(_order=found["oid"].map(order)).sort_values("_order", kind="mergesort")
    found = found.assign(catalog=catalog)
    for col in MATCH_COLUMNS:
        if col not in found.columns:
            found[col] = np.nan
    out = found[MATCH_COLUMNS].reset_index(drop=True)
    out["catid"] = out["catid"].astype(str)
    return out.astype({c: float for c in ["dist", "ra", "dec"] + ALLWISE_PHOTOMETRY})


def _nearest_per_oid(df):
    """Keep the row with the smallest ``dist`` for each oid (ties: smallest catid)."""
    if df.empty:
        return df
    df = df.sort_values(["dist", "catid"], kind="mergesort")
    return df.drop_duplicates("oid", keep="first")


class XmatchBackend:
    """Base of every cross-match backend. One verb: :meth:`match`.

    Subclasses implement :meth:`_match` (rows for the valid objects, one or more per oid);
    the base validates the input, keeps the nearest source per object, drops those beyond the
    radius and orders rows and columns (:data:`MATCH_COLUMNS`, rows in input order).
    """

    catalog = CATALOG

    def match(self, objects, radius_arcsec=2.0):
        """Nearest catalogue source within ``radius_arcsec`` of each object.

        ``objects``: DataFrame with ``oid, ra, dec`` (degrees). Returns a DataFrame with
        :data:`MATCH_COLUMNS`; objects without a source within the radius (or without
        coordinates) are absent.
        """
        radius_arcsec = float(radius_arcsec)
        if not radius_arcsec > 0:
            raise ValueError("radius_arcsec must be positive")
        missing = {"oid", "ra", "dec"} - set(objects.columns)
        if missing:
            raise ValueError(f"objects lack columns {sorted(missing)}")
        objects = objects[["oid", "ra", "dec"]]
        ok = np.isfinite(pd.to_numeric(objects["ra"], errors="coerce").to_numpy(float)) & \
            np.isfinite(pd.to_numeric(objects["dec"], errors="coerce").to_numpy(float))
        objects = objects[ok].astype({"ra": float, "dec": float})
        if objects.empty:
            return _empty_matches()
        found = self._match(objects.reset_index(drop=True), radius_arcsec)
        return _finalise(found, objects, radius_arcsec, self.catalog)

    def _match(self, objects, radius_arcsec):
        raise NotImplementedError


class LocalCatalogBackend(XmatchBackend):
    """Cone search in a local index file written by :func:`build_local_index`.

    The index is loaded and its k-d tree (``scipy.spatial.cKDTree`` on unit vectors) built on
    first use. An index written by another format version is refused.
    """

    def __init__(self, index_path):
        self.index_path = Path(index_path)
        self._index = None

    def __repr__(self):
        return f"LocalCatalogBackend({str(self.index_path)!r})"

    def load(self):
        """Read the index file and build the tree (done lazily by :meth:`match`)."""
        from scipy.spatial import cKDTree

        with np.load(self.index_path, allow_pickle=False) as npz:
            fmt = str(npz["format"]) if "format" in npz.files else "unknown"
            if fmt != INDEX_FORMAT:
                raise ValueError(f"{self.index_path.name}: index format {fmt!r}, "
                                 f"this code reads {INDEX_FORMAT!r}; rebuild the index")
            names = [str(n) for n in npz["photometry_names"]]
            index = {
                "catalog": str(npz["catalog"]),
                "ra": npz["ra"],
                "dec": npz["dec"],
                "catid": npz["catid"],
                "photometry": pd.DataFrame(npz["photometry"], columns=names),
            }
        index["tree"] = cKDTree(_unit_vectors(index["ra"], index["dec"]))
        self.catalog = index["catalog"]
        self._index = index
        return index

    def _match(self, objects, radius_arcsec):
        if self._index is None and not self.index_path.exists():
            raise XmatchUnavailable(
                f"local catalogue index {self.index_path.name} not found: build it with `manage.py load_catalog`",
                oids=list(objects["oid"]),
            )
        index = self._index or self.load()
        if len(index["ra"]) == 0:
            return None
        # Slightly widened bound; the exact cut on the recomputed separation is made by match().
        bound = _chord(radius_arcsec) * (1 + 1e-9) + 1e-15
        _, idx = index["tree"].query(_unit_vectors(objects["ra"], objects["dec"]), k=1,
                                     distance_upper_bound=bound)
        hit = idx < len(index["ra"])
        src = idx[hit]
        objs = objects[hit]
        found = pd.DataFrame({
            "oid": objs["oid"].to_numpy(),
            "catid": index["catid"][src],
            "dist": angular_separation_arcsec(objs["ra"], objs["dec"],
                                              index["ra"][src], index["dec"][src]),
            "ra": index["ra"][src],
            "dec": index["dec"][src],
        })
        phot = index["photometry"].iloc[src].reset_index(drop=True)
        return pd.concat([found, phot], axis=1)


def _column_values(table, name):
    """One column of an astropy Table or DataFrame as a numpy array, masked -> NaN/None."""
    if isinstance(table, pd.DataFrame):
        return table[name].to_numpy()
    col = table[name]
    values = np.ma.asarray(col)
    if values.dtype.kind == "S":
        values = np.ma.array(np.char.decode(values.filled(b""), "utf-8"),
                             mask=np.ma.getmaskarray(values))
    if values.dtype.kind in "fiub":
        if np.ma.is_masked(values):
            return values.astype(float).filled(np.nan)
        return np.asarray(values)
    if np.ma.is_masked(values):
        return np.where(np.ma.getmaskarray(values), None, values.data.astype(object))
    return np.asarray(values)


def parse_cds_response(table, oid_column="oid"):
    """Turn a CDS X-Match answer against II/328/allwise into :data:`MATCH_COLUMNS` rows.

    The answer (astropy Table or DataFrame) holds ``angDist`` (arcsec), the uploaded columns
    (``oid``, ``ra``, ``dec``) and the AllWISE ones (``AllWISE``, ``RAJ2000``, ``DEJ2000``,
    ``W1mag``, ``e_W1mag``, ..., ``Kmag``, ``e_Kmag``, ...). CDS returns every source within the
    radius; only the nearest per oid is kept. Missing photometry (masked) becomes NaN.
    """
    names = list(table.colnames if hasattr(table, "colnames") else table.columns)
    if len(table) == 0:
        return _empty_matches()

    def pick(candidates, what, exclude=()):
        found = _find_column([n for n in names if n not in exclude], candidates)
        if found is None:
            raise ValueError(f"CDS response has no {what} column (columns: {names})")
        return found

    uploaded = {oid_column, "ra", "dec"}
    out = pd.DataFrame({
        "oid": _column_values(table, pick([oid_column], "object id")),
        "catid": _column_values(table, pick(["AllWISE", "designation", "catid"], "AllWISE id",
                                            exclude=uploaded)),
        "dist": _column_values(table, pick(["angDist"], "angDist")).astype(float),
        "ra": _column_values(table, pick(["RAJ2000", "_RAJ2000", "RA_ICRS"], "source RA",
                                         exclude=uploaded)).astype(float),
        "dec": _column_values(table, pick(["DEJ2000", "DECJ2000", "_DEJ2000", "DE_ICRS"],
                                          "source Dec", exclude=uploaded)).astype(float),
    })
    for ours in ALLWISE_PHOTOMETRY:
        found = _find_column([n for n in names if n not in uploaded],
                             [ours] + PHOTOMETRY_ALIASES[ours])
        out[ours] = (pd.to_numeric(pd.Series(_column_values(table, found)), errors="coerce")
                     .to_numpy(float) if found is not None else np.nan)
    out["catalog"] = CATALOG
    out["catid"] = out["catid"].astype(str)
    out = _nearest_per_oid(out)
    return out[MATCH_COLUMNS].reset_index(drop=True)


def _transient_errors():
    """Exceptions worth a retry: network, HTTP, time-outs, CDS-side refusals, and an answer that is
    not a VOTable (an HTML error page from an overloaded server, also when astroquery tries to read
    the error of a failed request)."""
    import requests
    from astropy.io.votable.exceptions import E19
    from astroquery import exceptions as aq

    return (OSError, TimeoutError, requests.exceptions.RequestException, aq.RemoteServiceError,
            aq.InvalidQueryError, aq.TimeoutError, E19)


class CdsXmatchBackend(XmatchBackend):
    """Cross-match through the CDS X-Match service (``astroquery.xmatch``).

    Objects are sent ``batch_size`` at a time as an uploaded table (``oid, ra, dec``) against
    ``vizier:II/328/allwise``. Each batch gets ``retries`` extra attempts after a transient
    failure, waiting ``backoff * 2**attempt`` seconds; each HTTP request times out after
    ``timeout`` seconds. When a batch still fails, :class:`XmatchUnavailable` is raised with the
    oids left unanswered. ``url`` points astroquery at another X-Match endpoint (a mirror, or a
    local stand-in in tests); ``client`` replaces ``astroquery.xmatch.XMatch`` (anything with its
    ``query`` signature).
    """

    def __init__(self, timeout=60, retries=2, batch_size=5000, backoff=2.0,
                 table=CDS_ALLWISE_TABLE, client=None, sleep=time.sleep, url=None):
        self.url = url
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.batch_size = max(1, int(batch_size))
        self.backoff = backoff
        self.table = table
        self._client = client
        self._sleep = sleep

    @property
    def client(self):
        if self._client is None:
            from astroquery.xmatch import XMatchClass

            client = XMatchClass()
            client.TIMEOUT = self.timeout
            if self.url:
                client.URL = self.url
            self._client = client
        return self._client

    def _query(self, batch, radius_arcsec):
        import astropy.units as u
        from astropy.table import Table

        upload = Table({"oid": batch["oid"].astype(str).to_numpy(),
                        "ra": batch["ra"].to_numpy(float),
                        "dec": batch["dec"].to_numpy(float)})
        return self.client.query(cat1=upload, cat2=self.table,
                                 max_distance=radius_arcsec * u.arcsec,
                                 colRA1="ra", colDec1="dec", cache=False)

    def _match(self, objects, radius_arcsec):
        if radius_arcsec > 180:
            raise ValueError("CDS X-Match accepts radii up to 180 arcsec")
        transient = _transient_errors()
        # CDS may echo the uploaded oid with another type (CSV upload): map back by text.
        original = dict(zip(objects["oid"].astype(str), objects["oid"]))
        results = []
        for start in range(0, len(objects), self.batch_size):
            batch = objects.iloc[start:start + self.batch_size]
            for attempt in range(self.retries + 1):
                try:
                    response = self._query(batch, radius_arcsec)
                    break
                except transient as error:
                    if attempt == self.retries:
                        done = pd.concat(results, ignore_index=True) if results else None
                        raise XmatchUnavailable(
                            f"CDS X-Match failed {attempt + 1} times: {error!r}",
                            oids=objects["oid"].iloc[start:].tolist(),
                            partial=_finalise(done, objects, radius_arcsec, self.catalog),
                        ) from error
                    self._sleep(self.backoff * 2 ** attempt)
            parsed = parse_cds_response(response)
            parsed["oid"] = parsed["oid"].astype(str).map(original)
            results.append(parsed)
        return pd.concat(results, ignore_index=True) if results else None


def get_xmatch_backend(name, **options) -> XmatchBackend:
    """The backend named by the ``XMATCH_BACKEND`` setting: ``'local'`` (needs ``index_path``)
    or ``'cds'``; ``options`` go to its constructor."""
    backends = {"local": LocalCatalogBackend, "cds": CdsXmatchBackend}
    try:
        backend = backends[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown cross-match backend {name!r}; "
                         f"use one of {sorted(backends)}") from None
    return backend(**options)
