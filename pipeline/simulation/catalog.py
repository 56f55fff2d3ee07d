"""A simulated AllWISE-like catalogue around a simulated night, for the demo's cross-match.

SIMULATED data: designations start with ``SIMWISE`` and every row carries ``simulated=True``.
Counterparts follow rough class colours (Vega): AGN W1-W2 ~ 1 (Stern et al. 2012), stars ~ 0,
galaxies hosting supernovae 0.1-0.5; unrelated field sources lie 3-20 arcsec away.
"""
import numpy as np
import pandas as pd

W1_W2 = {"AGN": (0.8, 1.3), "RRL": (-0.05, 0.1), "EB": (-0.05, 0.15), "SNIa": (0.1, 0.5), "SNII": (0.1, 0.5)}
OFFSET_ARCSEC = {"AGN": (0.05, 0.6), "RRL": (0.05, 0.5), "EB": (0.05, 0.5), "SNIa": (0.3, 3.0), "SNII": (0.3, 3.0)}


def _offset(ra, dec, arcsec, angle):
    ddec = arcsec / 3600 * np.cos(angle)
    dra = arcsec / 3600 * np.sin(angle) / np.cos(np.radians(dec))
    return (ra + dra) % 360, dec + ddec


def simulated_allwise(objects, seed=0, field_sources=2):
    """Catalogue rows for ``objects`` (iterable with .ra, .dec, .cls): counterparts for AGN,
    variable stars and SN hosts, plus ``field_sources`` unrelated sources per object."""
    rng = np.random.default_rng([seed, 7])
    rows = []
    for obj in objects:
        if obj.cls in W1_W2:
            lo, hi = OFFSET_ARCSEC[obj.cls]
            ra, dec = _offset(obj.ra, obj.dec, rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi))
            rows.append(_source(rng, ra, dec, rng.uniform(*W1_W2[obj.cls])))
        for _ in range(field_sources):
            ra, dec = _offset(obj.ra, obj.dec, rng.uniform(3, 20), rng.uniform(0, 2 * np.pi))
            rows.append(_source(rng, ra, dec, rng.uniform(-0.1, 0.6)))
    table = pd.DataFrame(rows)
    table.insert(0, "AllWISE", [f"SIMWISE{i:09d}" for i in range(len(table))])
    table["simulated"] = True
    return table


def _source(rng, ra, dec, w1_w2):
    w1 = rng.uniform(11.5, 16.5)
    w2 = w1 - w1_w2
    w3 = w2 - rng.uniform(0.5, 3.0)
    w4 = w3 - rng.uniform(0.5, 2.0)
    k = w1 + rng.uniform(0.1, 1.0)
    return {
        "RAJ2000": ra, "DEJ2000": dec,
        "W1mag": w1, "e_W1mag": 0.02 + 0.01 * (w1 - 11.5), "W2mag": w2, "e_W2mag": 0.03 + 0.02 * (w2 - 11),
        "W3mag": w3, "e_W3mag": 0.1 + 0.05 * rng.random(), "W4mag": w4, "e_W4mag": 0.2 + 0.1 * rng.random(),
        "Jmag": k + rng.uniform(0.5, 1.2), "e_Jmag": 0.03, "Hmag": k + rng.uniform(0.1, 0.4), "e_Hmag": 0.04,
        "Kmag": k, "e_Kmag": 0.05,
    }
