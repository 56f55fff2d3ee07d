"""The API's parameter parsing and angular distance, without a database."""

import numpy as np
import pytest
from django.http import QueryDict

from pipeline.api.queries import (
    DEFAULT_CONE_RADIUS_ARCSEC, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, BadParameter, Page, angular_separation_deg,
    parse_object_query,
)


def test_angular_separation_hand_values():
    assert angular_separation_deg(0.0, 0.0, 1.0, 0.0) == pytest.approx(1.0)
    assert angular_separation_deg(359.5, 0.0, 0.5, 0.0) == pytest.approx(1.0)  # across RA 0
    assert angular_separation_deg(10.0, 89.0, 190.0, 89.0) == pytest.approx(2.0)  # over the pole
    # at dec 60 one degree of RA is cos(60) = 0.5 degree of arc (small-angle)
    assert angular_separation_deg(0.0, 60.0, 0.01, 60.0) == pytest.approx(0.005, rel=1e-4)
    assert angular_separation_deg(0.0, 0.0, 0.0, 90.0) == pytest.approx(90.0)
    assert np.allclose(angular_separation_deg(0.0, 0.0, np.array([0.0, 180.0]), np.array([0.0, 0.0])), [0.0, 180.0])


def test_parse_defaults_and_ranges():
    q = parse_object_query(QueryDict("ndet=5&ndet=10&firstmjd=60000.5&ra=10&dec=-20&class_name=SNIa"))
    assert q.ndet == (5, 10) and q.firstmjd == (60000.5,) and q.class_name == "SNIa"
    assert q.radius == DEFAULT_CONE_RADIUS_ARCSEC and q.page == 1 and q.page_size == DEFAULT_PAGE_SIZE
    assert q.class_filtered and not q.count
    assert parse_object_query(QueryDict("oid=ZTF1,ZTF2&oid=ZTF3")).oids == ["ZTF1", "ZTF2", "ZTF3"]
    assert parse_object_query(QueryDict("count=True&order_mode=desc")).count
    assert parse_object_query(QueryDict("order_mode=desc")).order_mode == "DESC"


@pytest.mark.parametrize("query, param", [
    (f"page_size={MAX_PAGE_SIZE + 1}", "page_size"), ("radius=10", "radius"), ("dec=3", "ra"),
    ("ra=nan&dec=0", "ra"), ("lastmjd=3&lastmjd=2", "lastmjd"), ("ranking=0", "ranking"),
])
def test_parse_rejects_with_the_parameter_name(query, param):
    with pytest.raises(BadParameter) as err:
        parse_object_query(QueryDict(query))
    assert err.value.param == param


def test_page_shape():
    page = Page(items=[{"oid": "a"}], page=2, page_size=1, total=None, has_next=False).as_alerce()
    assert page == {"total": None, "page": 2, "next": None, "has_next": False, "prev": 1, "has_prev": True,
                    "items": [{"oid": "a"}]}
