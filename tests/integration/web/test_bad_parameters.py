"""Every dashboard route with bad values of each of its parameters: a 4xx or a page, never a 500."""
import pytest

from pipeline.web.views import SEARCH_FIELDS
from tests.integration.broker_data import broker_db  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db

SEARCH_PARAMS = (*SEARCH_FIELDS, "page", "count", "ndet_min", "ndet_max", "firstmjd_min", "firstmjd_max",
                 "lastmjd_min", "lastmjd_max")
ROUTES = {
    "/": (),
    "/search": SEARCH_PARAMS,
    "/search/cutouts.zip": SEARCH_PARAMS,
    "/search/objects.csv": (*SEARCH_PARAMS, "columns"),
    "/object/{oid}": (),
    "/pipeline": (),
    "/classifiers": ("lc",),
    "/outliers": ("all",),
    "/timing/": ("hours",),
    "/timing.png": ("hours",),
    "/alerts/{candid}.avro": (),
}
BAD_VALUES = ("abc", "", " ", "-1", "0", "nan", "inf", "-inf", "1e400", "9" * 40, "-" + "9" * 40, "1.5", "1,2",
              "\x00", "%", "' OR '1'='1", "x" * 3000, "2024-02-30", "é")


def get(client, url, params):
    client.raise_request_exception = False  # a view that raises answers 500 here: the test counts those
    return client.get(url, params)


def test_no_dashboard_route_answers_500_to_bad_parameters(client, broker_db):
    oid, candid = broker_db["rich"], broker_db["stamped_candid"]
    errors, statuses = [], {}
    for route, names in ROUTES.items():
        url = route.format(oid=oid, candid=candid)
        for name in names + ("unknown_parameter",):
            for value in BAD_VALUES + (["1", "2", "3"],):
                response = get(client, url, {name: value})
                statuses[(route, name, str(value)[:20])] = response.status_code
                if response.status_code >= 500:
                    errors.append(f"{url}?{name}={str(value)[:20]!r}: {response.status_code}")
    assert not errors, f"{len(errors)} answers of 500 and more: {errors[:20]}"
    # values that are not numbers, or numbers out of range, are the client's error
    not_numbers = ("abc", "nan", "inf", "1e400", "1,2", "\x00")
    for route, name, values in (("/timing/", "hours", not_numbers + ("-1", "0", "9" * 20)),
                                ("/timing.png", "hours", not_numbers + ("-1", "0")),
                                ("/search", "ndet_min", not_numbers), ("/search", "page", not_numbers + ("-1", "0")),
                                ("/search/objects.csv", "page_size", not_numbers + ("-1", "0", "9" * 20)),
                                ("/search/cutouts.zip", "ra", not_numbers + ("-1",))):
        for value in values:
            assert statuses[(route, name, value)] == 400, (route, name, value)
    assert statuses[("/outliers", "all", "abc")] == 400
    assert statuses[("/classifiers", "lc", "abc")] == 400


@pytest.mark.parametrize("path", [
    "/object/" + "x" * 3000, "/object/..%2F..%2Fetc", "/object/ZTF00nothere",
    "/alerts/0.avro", "/alerts/" + "9" * 40 + ".avro", "/alerts/9223372036854775808.avro",
])
def test_bad_path_values_are_404(client, broker_db, path):
    assert get(client, path, {}).status_code == 404


@pytest.mark.parametrize("path, params", [
    ("/object/%00", {}), ("/object/ZTF%0017aaaaaaa", {}), ("/search", {"oid": "ZTF\x00"}),
    ("/search/objects.csv", {"oid": "\x00"}), ("/ztf/v1/objects", {"oid": "\x00"}),
    ("/ztf/v1/objects/%00", {}), ("/search", {"\x00": "1"}),
])
def test_nul_characters_are_400_on_every_database(client, broker_db, path, params):
    # PostgreSQL refuses NUL in a query (psycopg raises); the request is refused before any view runs
    response = get(client, path, params)
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


def test_search_with_a_bad_value_is_400_and_says_which(client, broker_db):
    response = get(client, "/search", {"ndet_min": "abc"})
    assert response.status_code == 400 and b'class="error"' in response.content and b"ndet" in response.content


def test_hours_accepts_sensible_values(client, broker_db):
    for value in ("24", "0.5", "8760"):
        assert get(client, "/timing/", {"hours": value}).status_code == 200
