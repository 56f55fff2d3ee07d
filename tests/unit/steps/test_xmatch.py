"""Cross-match with AllWISE: the local k-d tree backend, the CDS response parser, the CDS
backend's batching/retry contract (with a stand-in client: no network), catalogue readers.

Distances are checked against astropy's SkyCoord.separation, an independent implementation.
"""
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table

from pipeline.steps.xmatch import (
    ALLWISE_PHOTOMETRY, MATCH_COLUMNS, CdsXmatchBackend, LocalCatalogBackend, XmatchUnavailable, build_local_index,
    get_xmatch_backend, parse_cds_response, read_catalog_table,
)

ARCSEC = 1 / 3600.0


def offset(ra, dec, pa_deg, sep_arcsec):
    """Position at separation ``sep_arcsec`` and position angle ``pa_deg`` from (ra, dec)."""
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(pa_deg * u.deg,
                                                                sep_arcsec * u.arcsec)
    return c.ra.deg, c.dec.deg


def phot(seed):
    rng = np.random.default_rng(seed)
    return {name: round(float(rng.uniform(0.01, 0.3) if name.startswith("e_")
                              else rng.uniform(8, 17)), 3)
            for name in ALLWISE_PHOTOMETRY}


def make_case():
    """Objects and a catalogue with known offsets; ``expected`` maps oid -> catid (or None)."""
    objects, sources, expected = [], [], {}

    def add_object(oid, ra, dec):
        objects.append({"oid": oid, "ra": ra, "dec": dec})

    def add_source(catid, ra, dec):
        sources.append({"AllWISE": catid, "ra": ra, "dec": dec, **phot(len(sources))})

    # 1.9" matches, 2.1" does not.
    add_object("ZTF_in", 150.0, 20.0)
    add_source("J_in", *offset(150.0, 20.0, 37.0, 1.9))
    expected["ZTF_in"] = "J_in"
    add_object("ZTF_out", 210.0, -30.0)
    add_source("J_out", *offset(210.0, -30.0, 200.0, 2.1))
    expected["ZTF_out"] = None
    # Across RA = 0: object just below 360, source just above 0.
    add_object("ZTF_ra0", 359.9999, 10.0)
    add_source("J_ra0", 0.0003, 10.0)  # 0.0004 deg * cos(10 deg) = 1.418"
    expected["ZTF_ra0"] = "J_ra0"
    add_object("ZTF_ra0_b", 0.0001, -5.0)
    add_source("J_ra0_b", 359.99985, -5.0 + 0.2 * ARCSEC)
    expected["ZTF_ra0_b"] = "J_ra0_b"
    # Near the north pole: RA differs by 180 degrees, yet the source is 1.872" away across the
    # pole (1.8" + 0.072"); another at RA + 90 degrees is sqrt(2) * 1.8" = 2.55" away.
    add_object("ZTF_pole", 10.0, 89.9995)
    add_source("J_pole", 190.0, 89.99998)
    add_source("J_pole_wide", 100.0, 89.9995)
    expected["ZTF_pole"] = "J_pole"
    # Near the south pole: both 0.36" from the pole, 170 degrees apart in RA: 0.72" sin(85 deg).
    add_object("ZTF_spole", 5.0, -89.9999)
    add_source("J_spole", 175.0, -89.9999)
    expected["ZTF_spole"] = "J_spole"
    # ... and an object 2.48" from that source (2.52" from the pole, 80 degrees away in RA).
    add_object("ZTF_spole_out", 95.0, -89.9993)
    expected["ZTF_spole_out"] = None
    # Two sources within the radius: the nearer one wins.
    add_object("ZTF_two", 80.0, 45.0)
    add_source("J_far", *offset(80.0, 45.0, 90.0, 1.5))
    add_source("J_near", *offset(80.0, 45.0, 270.0, 0.7))
    add_source("J_outer", *offset(80.0, 45.0, 0.0, 5.0))
    expected["ZTF_two"] = "J_near"
    # Nothing around.
    add_object("ZTF_none", 300.0, 60.0)
    expected["ZTF_none"] = None
    return pd.DataFrame(objects), pd.DataFrame(sources), expected


def astropy_sep(a_ra, a_dec, b_ra, b_dec):
    a = SkyCoord(a_ra * u.deg, a_dec * u.deg)
    return a.separation(SkyCoord(b_ra * u.deg, b_dec * u.deg)).arcsec


def expected_from_astropy(objects, sources, radius):
    """Brute force with astropy: nearest source within ``radius`` per object."""
    out = {}
    for row in objects.itertuples():
        sep = astropy_sep(row.ra, row.dec, sources["ra"].to_numpy(), sources["dec"].to_numpy())
        i = int(np.argmin(sep))
        out[row.oid] = (sources["AllWISE"].iloc[i], sep[i]) if sep[i] <= radius else None
    return out


@pytest.fixture
def case(tmp_path):
    objects, sources, expected = make_case()
    path = build_local_index(sources, tmp_path / "allwise.npz")
    return objects, sources, expected, LocalCatalogBackend(path)


def test_local_matches_known_offsets(case):
    objects, sources, expected, backend = case
    result = backend.match(objects, radius_arcsec=2.0)
    assert list(result.columns) == MATCH_COLUMNS
    got = dict(zip(result["oid"], result["catid"]))
    assert got == {oid: cat for oid, cat in expected.items() if cat is not None}
    assert (result["catalog"] == "allwise").all()
    # Output rows follow the input order.
    assert list(result["oid"]) == [o for o in objects["oid"] if expected[o] is not None]


def test_local_agrees_with_astropy_brute_force(case):
    objects, sources, expected, backend = case
    for radius in (0.5, 1.0, 2.0, 3.0, 6.0):
        result = backend.match(objects, radius_arcsec=radius).set_index("oid")
        truth = expected_from_astropy(objects, sources, radius)
        assert set(result.index) == {o for o, v in truth.items() if v is not None}, radius
        for oid, value in truth.items():
            if value is not None:
                assert result.loc[oid, "catid"] == value[0]
                assert result.loc[oid, "dist"] == pytest.approx(value[1], abs=1e-6)


def test_local_random_sky_against_astropy(tmp_path):
    """Random objects (many at RA ~ 0 and at the poles) with sources scattered 0-4" around."""
    rng = np.random.default_rng(42)
    n = 300
    ra = np.concatenate([rng.uniform(0, 360, n), rng.uniform(-0.001, 0.001, n) % 360,
                         rng.uniform(0, 360, n)])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, n))), rng.uniform(-1, 1, n),
                          rng.choice([-1, 1], n) * rng.uniform(89.999, 90.0, n)])
    objects = pd.DataFrame({"oid": [f"o{i}" for i in range(3 * n)], "ra": ra, "dec": dec})
    src_ra, src_dec = offset(np.repeat(ra, 2), np.repeat(dec, 2), rng.uniform(0, 360, 6 * n),
                             rng.uniform(0, 4, 6 * n))
    sources = pd.DataFrame({"AllWISE": [f"J{i}" for i in range(6 * n)], "ra": src_ra,
                            "dec": src_dec})
    backend = LocalCatalogBackend(build_local_index(sources, tmp_path / "r.npz"))
    result = backend.match(objects, radius_arcsec=2.0).set_index("oid")
    cat = SkyCoord(src_ra * u.deg, src_dec * u.deg)
    idx, sep, _ = SkyCoord(ra * u.deg, dec * u.deg).match_to_catalog_sky(cat)
    within = sep.arcsec <= 2.0
    assert set(result.index) == set(objects["oid"][within])
    np.testing.assert_array_equal(result.loc[objects["oid"][within], "catid"],
                                  sources["AllWISE"].to_numpy()[idx[within]])
    np.testing.assert_allclose(result.loc[objects["oid"][within], "dist"],
                               sep.arcsec[within], rtol=0, atol=1e-6)


def test_local_distances_and_photometry(case):
    objects, sources, expected, backend = case
    result = backend.match(objects, radius_arcsec=2.0)
    src = sources.set_index("AllWISE")
    obj = objects.set_index("oid")
    for row in result.itertuples():
        s = src.loc[row.catid]
        assert row.ra == pytest.approx(s["ra"] % 360, abs=1e-12)
        assert row.dec == pytest.approx(s["dec"], abs=1e-12)
        sep = astropy_sep(obj.loc[row.oid, "ra"], obj.loc[row.oid, "dec"], s["ra"], s["dec"])
        assert row.dist == pytest.approx(sep, abs=1e-6)
        for name in ALLWISE_PHOTOMETRY:
            assert getattr(row, name) == s[name]
    dist = result.set_index("oid")["dist"]
    assert dist["ZTF_in"] == pytest.approx(1.9, abs=1e-6)
    assert dist["ZTF_ra0"] == pytest.approx(0.0004 * np.cos(np.radians(10)) * 3600, rel=1e-6)
    assert dist["ZTF_spole"] == pytest.approx(0.72 * np.sin(np.radians(85)), rel=1e-6)
    assert dist["ZTF_pole"] == pytest.approx(1.872, rel=1e-6)


def test_no_match_empty_and_bad_input(case):
    objects, _, _, backend = case
    none = backend.match(objects[objects["oid"] == "ZTF_none"])
    assert none.empty and list(none.columns) == MATCH_COLUMNS
    assert backend.match(objects.iloc[:0]).empty
    with_nan = pd.concat([objects, pd.DataFrame([{"oid": "ZTF_nan", "ra": np.nan, "dec": 1.0}])])
    assert "ZTF_nan" not in set(backend.match(with_nan)["oid"])
    with pytest.raises(ValueError):
        backend.match(objects[["oid", "ra"]])
    with pytest.raises(ValueError):
        backend.match(objects, radius_arcsec=0)


def test_index_round_trip(tmp_path):
    _, sources, _ = make_case()
    sources = sources.rename(columns={"AllWISE": "designation", "ra": "RAJ2000", "dec": "DEJ2000",
                                      "W1mag": "w1mpro", "e_W1mag": "w1sigmpro"})
    sources = sources.drop(columns=["Kmag"])
    path = build_local_index(sources, tmp_path / "sub" / "index.npz")
    assert path.exists()
    index = LocalCatalogBackend(path).load()
    assert list(index["catid"]) == list(sources["designation"])
    np.testing.assert_array_equal(index["ra"], np.mod(sources["RAJ2000"], 360.0))
    np.testing.assert_array_equal(index["dec"], sources["DEJ2000"])
    np.testing.assert_array_equal(index["photometry"]["W1mag"], sources["w1mpro"])
    np.testing.assert_array_equal(index["photometry"]["e_W1mag"], sources["w1sigmpro"])
    assert index["photometry"]["Kmag"].isna().all()
    assert index["catalog"] == "allwise"
    # No pickles inside: loads with allow_pickle=False.
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["format"]).startswith("broker-xmatch-index/")


def test_index_version_is_checked(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, format=np.array("broker-xmatch-index/0"), ra=np.zeros(1))
    with pytest.raises(ValueError, match="rebuild"):
        LocalCatalogBackend(path).match(pd.DataFrame({"oid": ["a"], "ra": [0.0], "dec": [0.0]}))


def test_empty_catalogue(tmp_path):
    empty = pd.DataFrame({"AllWISE": pd.Series(dtype=str), "ra": pd.Series(dtype=float),
                          "dec": pd.Series(dtype=float)})
    backend = LocalCatalogBackend(build_local_index(empty, tmp_path / "empty.npz"))
    assert backend.match(pd.DataFrame({"oid": ["a"], "ra": [1.0], "dec": [2.0]})).empty


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_read_catalog_table(tmp_path, fmt):
    _, sources, _ = make_case()
    names = {"csv": ("ra", "dec"), "parquet": ("RAJ2000", "DEJ2000"),
             "fits": ("RA_ICRS", "DE_ICRS")}[fmt]
    table = sources.rename(columns={"ra": names[0], "dec": names[1]})
    path = tmp_path / f"catalogue.{fmt}"
    if fmt == "csv":
        table.to_csv(path, index=False, float_format="%.12f")
    elif fmt == "parquet":
        table.to_parquet(path, index=False)
    else:
        Table.from_pandas(table).write(path, format="fits")
    df = read_catalog_table(path)
    assert {"ra", "dec", "catid", *ALLWISE_PHOTOMETRY} <= set(df.columns)
    assert list(df["catid"]) == list(sources["AllWISE"])
    np.testing.assert_allclose(df["ra"], sources["ra"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(df["dec"], sources["dec"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(df["W2mag"], sources["W2mag"])
    # The table read back builds the same index and gives the same matches.
    objects, _, expected = make_case()
    result = LocalCatalogBackend(build_local_index(df, tmp_path / "i.npz")).match(objects)
    assert dict(zip(result["oid"], result["catid"])) == {o: c for o, c in expected.items() if c}


def test_read_catalog_table_without_coordinates(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"x": [1.0], "y": [2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="ra/dec"):
        read_catalog_table(path)


# ---------------------------------------------------------------- CDS response and backend

def cds_response(objects, sources, radius, mask_first=True):
    """An astropy Table shaped like CDS X-Match's answer for cat1=(oid, ra, dec) against
    vizier:II/328/allwise: angDist first, then the uploaded columns, then AllWISE's, every
    source within the radius (not only the nearest), unmatched photometry masked."""
    rows = []
    for obj in objects.itertuples():
        sep = astropy_sep(obj.ra, obj.dec, sources["ra"].to_numpy(), sources["dec"].to_numpy())
        for i in np.flatnonzero(sep <= radius):
            s = sources.iloc[i]
            rows.append({"angDist": round(float(sep[i]), 6), "oid": obj.oid, "ra": obj.ra,
                         "dec": obj.dec, "AllWISE": s["AllWISE"], "RAJ2000": s["ra"] % 360,
                         "DEJ2000": s["dec"], "eeMaj": 0.05, "eeMin": 0.05, "eePA": 90,
                         **{k: s[k] for k in ALLWISE_PHOTOMETRY}, "ccf": "0000", "ex": 0})
    columns = ["angDist", "oid", "ra", "dec", "AllWISE", "RAJ2000", "DEJ2000", "eeMaj", "eeMin",
               "eePA", "W1mag", "W2mag", "W3mag", "W4mag", "Jmag", "Hmag", "Kmag",
               "e_W1mag", "e_W2mag", "e_W3mag", "e_W4mag", "e_Jmag", "e_Hmag", "e_Kmag",
               "ccf", "ex"]
    table = Table(rows=[[r[c] for c in columns] for r in rows], names=columns) if rows \
        else Table(names=columns, dtype=[float, str, float, float, str, float, float, float,
                                          float, float] + [float] * 14 + [str, int])
    for name in ("W4mag", "e_W4mag", "Kmag"):
        table[name] = MaskedColumn(table[name], mask=np.zeros(len(table), bool))
    if rows and mask_first:
        table["W4mag"].mask[0] = True
        table["e_W4mag"].mask[0] = True
    return table


def test_parse_cds_response_keeps_nearest_and_renames():
    objects, sources, expected = make_case()
    table = cds_response(objects, sources, 2.0)
    assert list(table["oid"]).count("ZTF_two") == 2  # CDS gives every source in the radius
    parsed = parse_cds_response(table)
    assert list(parsed.columns) == MATCH_COLUMNS
    assert dict(zip(parsed["oid"], parsed["catid"])) == {o: c for o, c in expected.items() if c}
    first = parsed.set_index("oid").loc[table["oid"][0]]
    assert np.isnan(first["W4mag"]) and np.isnan(first["e_W4mag"])
    # RAJ2000/DEJ2000 are the source's position, not the uploaded object's.
    row = parsed.set_index("oid").loc["ZTF_in"]
    src = sources.set_index("AllWISE").loc["J_in"]
    assert (row["ra"], row["dec"]) == (src["ra"], src["dec"])
    assert row["W1mag"] == src["W1mag"] and row["e_Kmag"] == src["e_Kmag"]
    assert parse_cds_response(table[:0]).empty


def test_parse_cds_response_matches_local_backend(case):
    objects, sources, _, backend = case
    local = backend.match(objects, radius_arcsec=2.0)
    parsed = parse_cds_response(cds_response(objects, sources, 2.0))
    parsed = parsed.set_index("oid").loc[local["oid"]].reset_index()
    pd.testing.assert_frame_equal(local.drop(columns="dist").assign(W4mag=0.0, e_W4mag=0.0),
                                  parsed.drop(columns="dist").assign(W4mag=0.0, e_W4mag=0.0),
                                  check_exact=False, atol=1e-9)
    np.testing.assert_allclose(local["dist"], parsed["dist"], atol=1e-6)


def test_parse_cds_response_accepts_dataframe_and_decj2000():
    objects, sources, _ = make_case()
    df = cds_response(objects, sources, 2.0).to_pandas().rename(columns={"DEJ2000": "DECJ2000"})
    parsed = parse_cds_response(df)
    assert "J_near" in set(parsed["catid"])


class FakeXMatch:
    """Stands in for astroquery's XMatch: answers from a local catalogue, can fail."""

    def __init__(self, sources, failures=0, error=ConnectionError("CDS down")):
        self.sources, self.failures, self.error = sources, failures, error
        self.calls = []

    def query(self, cat1, cat2, max_distance, colRA1=None, colDec1=None, cache=True):
        self.calls.append((len(cat1), cat2, max_distance.to_value(u.arcsec), colRA1, colDec1))
        if self.failures:
            self.failures -= 1
            raise self.error
        objects = cat1.to_pandas()
        radius = max_distance.to_value(u.arcsec)
        return cds_response(objects, self.sources, radius, mask_first=False)


def test_cds_backend_batches_and_retries(case):
    objects, sources, _, local = case
    client = FakeXMatch(sources, failures=1)
    sleeps = []
    backend = CdsXmatchBackend(batch_size=3, retries=2, client=client, sleep=sleeps.append)
    result = backend.match(objects, radius_arcsec=2.0)
    pd.testing.assert_frame_equal(result.drop(columns="dist"),
                                  local.match(objects).drop(columns="dist"))
    n_batches = -(-len(objects) // 3)
    assert len(client.calls) == n_batches + 1 and len(sleeps) == 1
    assert all(c[1:] == ("vizier:II/328/allwise", 2.0, "ra", "dec") for c in client.calls)


def test_cds_backend_gives_up_with_typed_error(case):
    objects, sources, _, _ = case
    client = FakeXMatch(sources, failures=99)
    backend = CdsXmatchBackend(batch_size=100, retries=2, client=client, sleep=lambda s: None)
    with pytest.raises(XmatchUnavailable) as info:
        backend.match(objects)
    assert info.value.oids == list(objects["oid"])
    assert info.value.partial.empty
    assert len(client.calls) == 3


def test_cds_backend_partial_results(case):
    objects, sources, _, _ = case
    client = FakeXMatch(sources)
    backend = CdsXmatchBackend(batch_size=4, retries=0, client=client, sleep=lambda s: None)
    original = client.query

    def second_batch_fails(**kwargs):
        if len(client.calls) == 1:
            client.calls.append("failed")
            raise TimeoutError("read timed out")
        return original(**kwargs)

    client.query = second_batch_fails
    with pytest.raises(XmatchUnavailable) as info:
        backend.match(objects)
    assert info.value.oids == list(objects["oid"].iloc[4:])
    assert set(info.value.partial["oid"]) <= set(objects["oid"].iloc[:4])
    assert "ZTF_in" in set(info.value.partial["oid"])


def test_cds_backend_does_not_retry_programming_errors(case):
    objects, sources, _, _ = case
    client = FakeXMatch(sources, failures=1, error=TypeError("bug"))
    with pytest.raises(TypeError):
        CdsXmatchBackend(client=client, sleep=lambda s: None).match(objects)
    assert len(client.calls) == 1


def test_get_xmatch_backend(tmp_path):
    _, sources, _ = make_case()
    path = build_local_index(sources, tmp_path / "i.npz")
    assert isinstance(get_xmatch_backend("local", index_path=path), LocalCatalogBackend)
    cds = get_xmatch_backend("CDS", timeout=5, retries=1)
    assert isinstance(cds, CdsXmatchBackend) and cds.timeout == 5 and cds.retries == 1
    with pytest.raises(ValueError):
        get_xmatch_backend("gaia")
