"""The object search shared by the REST API and the dashboard, with ALeRCE's ZTF API v1 parameters.

``parse_object_query`` turns query parameters (a QueryDict) into an ``ObjectQuery`` or raises
``BadParameter`` naming the parameter; ``search_objects`` runs it with bounded work: at most
``MAX_PAGE_SIZE`` rows per page and cone radii up to ``MAX_CONE_RADIUS_ARCSEC``.
"""
import math
import re
from dataclasses import dataclass, field

import numpy as np
from django.db.models import F, OuterRef, Q, Subquery

from pipeline.models import Object, Probability

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
DEFAULT_CONE_RADIUS_ARCSEC = 30.0
MAX_CONE_RADIUS_ARCSEC = 3600.0
MAX_OIDS = 1000
DEFAULT_CLASSIFIER = "lc_classifier"

OBJECT_COLUMNS = (
    "oid", "ndethist", "ncovhist", "mjdstarthist", "mjdendhist", "corrected", "stellar", "ndet",
    "g_r_max", "g_r_max_corr", "g_r_mean", "g_r_mean_corr", "meanra", "meandec", "sigmara", "sigmadec",
    "deltamjd", "firstmjd", "lastmjd", "step_id_corr",
)
# order_by values the client documents; "class"/"probability"/"classifier" sort on the joined class row
ORDER_COLUMNS = {**{c: c for c in OBJECT_COLUMNS}, "probability": "probability", "class_name": "class_name",
                 "class": "class_name", "classifier_name": "classifier_name", "classifier": "classifier_name"}
TRUE_WORDS = {"true", "t", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "off", ""}


class BadParameter(ValueError):
    """A query parameter that cannot be used; ``param`` names it (400 in the API)."""

    def __init__(self, param, message):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass
class ObjectQuery:
    classifier: str = None
    classifier_version: str = None
    class_name: str = None
    probability: float = None
    ranking: int = None
    ndet: tuple = ()
    firstmjd: tuple = ()
    lastmjd: tuple = ()
    ra: float = None
    dec: float = None
    radius: float = None
    oids: list = field(default_factory=list)
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    count: bool = False
    order_by: str = None
    order_mode: str = "ASC"

    @property
    def class_filtered(self):
        return any(v is not None for v in (self.classifier, self.classifier_version, self.class_name,
                                            self.probability, self.ranking))


def _number(params, name, kind, low=None, high=None):
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise BadParameter(name, f"{raw!r} is not a{'n integer' if kind is int else ' number'}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadParameter(name, f"{raw!r} is not a finite number")
    if low is not None and value < low or high is not None and value > high:
        raise BadParameter(name, f"{raw!r} is outside [{low}, {high}]")
    return value


def _range(params, name, kind):
    values = [v for v in params.getlist(name) if v != ""]
    if len(values) > 2:
        raise BadParameter(name, "give one value (minimum) or two (minimum, maximum)")
    out = []
    for raw in values:
        try:
            value = kind(raw)
        except ValueError:
            raise BadParameter(name, f"{raw!r} is not a{'n integer' if kind is int else ' number'}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadParameter(name, f"{raw!r} is not a finite number")
        out.append(value)
    if len(out) == 2 and out[0] > out[1]:
        raise BadParameter(name, f"minimum {out[0]} is above maximum {out[1]}")
    return tuple(out)


def parse_bool(params, name, default=False):
    raw = params.get(name)
    if raw is None:
        return default
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadParameter(name, f"{raw!r} is not a boolean (true/false)")


def parse_object_query(params):
    """ALeRCE's query_objects parameters -> ObjectQuery (``class`` or ``class_name`` for the class)."""
    q = ObjectQuery()
    q.classifier = params.get("classifier") or None
    q.classifier_version = params.get("classifier_version") or None
    q.class_name = params.get("class") or params.get("class_name") or None
    q.probability = _number(params, "probability", float, 0.0, 1.0)
    q.ranking = _number(params, "ranking", int, 1, 1000)
    q.ndet = _range(params, "ndet", int)
    q.firstmjd = _range(params, "firstmjd", float)
    q.lastmjd = _range(params, "lastmjd", float)
    q.ra = _number(params, "ra", float, 0.0, 360.0)
    q.dec = _number(params, "dec", float, -90.0, 90.0)
    q.radius = _number(params, "radius", float, 0.0, MAX_CONE_RADIUS_ARCSEC)
    if (q.ra is None) != (q.dec is None):
        raise BadParameter("ra" if q.ra is None else "dec", "a cone search needs both ra and dec")
    if q.radius is not None and q.ra is None:
        raise BadParameter("radius", "a cone search needs ra and dec too")
    if q.ra is not None and q.radius is None:
        q.radius = DEFAULT_CONE_RADIUS_ARCSEC
    oids = []
    for raw in params.getlist("oid"):
        oids.extend(part.strip() for part in raw.replace(",", " ").split() if part.strip())
    if len(oids) > MAX_OIDS:
        raise BadParameter("oid", f"at most {MAX_OIDS} object ids per query")
    q.oids = oids
    q.page = _number(params, "page", int, 1, 10**6) or 1
    size = _number(params, "page_size", int, 1, MAX_PAGE_SIZE)
    q.page_size = size or DEFAULT_PAGE_SIZE
    q.count = parse_bool(params, "count")
    order_by = params.get("order_by") or None
    if order_by is not None and order_by not in ORDER_COLUMNS:
        raise BadParameter("order_by", f"{order_by!r} is not one of {', '.join(sorted(ORDER_COLUMNS))}")
    q.order_by = order_by
    mode = (params.get("order_mode") or "ASC").upper()
    if mode not in ("ASC", "DESC"):
        raise BadParameter("order_mode", f"{params.get('order_mode')!r} is not ASC or DESC")
    q.order_mode = mode
    return q


def angular_separation_deg(ra1, dec1, ra2, dec2):
    """Great-circle distance (haversine), all in degrees."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def cone_oids(ra, dec, radius_arcsec, queryset=None):
    """Object ids within the cone, nearest first: a (meandec, meanra) box on the index, then exact distance."""
    queryset = Object.objects.all() if queryset is None else queryset
    radius = radius_arcsec / 3600.0
    box = Q(meandec__gte=dec - radius, meandec__lte=dec + radius)
    cos_dec = math.cos(math.radians(min(89.999, abs(dec) + radius)))
    half_width = radius / cos_dec if abs(dec) + radius < 90 else 180.0
    if half_width < 180.0:
        low, high = ra - half_width, ra + half_width
        if low < 0:
            box &= Q(meanra__gte=low + 360) | Q(meanra__lte=high)
        elif high > 360:
            box &= Q(meanra__gte=low) | Q(meanra__lte=high - 360)
        else:
            box &= Q(meanra__gte=low, meanra__lte=high)
    rows = list(queryset.filter(box).values_list("oid", "meanra", "meandec"))
    if not rows:
        return []
    oids, ras, decs = zip(*rows)
    dist = angular_separation_deg(ra, dec, np.array(ras), np.array(decs))
    keep = np.flatnonzero(dist <= radius)
    return [oids[i] for i in keep[np.argsort(dist[keep], kind="stable")]]


def _latest_version(classifier):
    versions = Probability.objects.filter(classifier_name=classifier).values_list("classifier_version", flat=True)
    return max(versions.distinct(), default=None)


def object_queryset(q):
    """Objects matching q, each annotated with one class row (class_name, probability, classifier_name).

    Without class filters the class row is the top class of ``lc_classifier`` (its newest version), as
    ALeRCE's API does; with filters, only objects with a matching probability row (ranking 1 unless
    another ranking or a probability threshold is given) are kept.
    """
    qs = Object.objects.all()
    if q.ndet:
        qs = qs.filter(ndet__gte=q.ndet[0])
        if len(q.ndet) > 1:
            qs = qs.filter(ndet__lte=q.ndet[1])
    for name in ("firstmjd", "lastmjd"):
        bounds = getattr(q, name)
        if bounds:
            qs = qs.filter(**{f"{name}__gte": bounds[0]})
            if len(bounds) > 1:
                qs = qs.filter(**{f"{name}__lte": bounds[1]})
    if len(q.oids) == 1 and "*" in q.oids[0]:  # ALeRCE's wildcard form: ZTF20*
        qs = qs.filter(oid__regex="^" + ".*".join(re.escape(part) for part in q.oids[0].split("*")) + "$")
    elif q.oids:
        qs = qs.filter(oid__in=q.oids)

    probs = Probability.objects.filter(oid=OuterRef("oid"))
    if q.class_filtered:
        if q.classifier:
            probs = probs.filter(classifier_name=q.classifier)
        if q.classifier_version:
            probs = probs.filter(classifier_version=q.classifier_version)
        if q.class_name:
            probs = probs.filter(class_name=q.class_name)
        if q.probability is not None:
            probs = probs.filter(probability__gte=q.probability)
        if q.ranking is not None:
            probs = probs.filter(ranking=q.ranking)
        elif q.probability is None or q.classifier or q.class_name:
            probs = probs.filter(ranking=1)
    else:
        probs = probs.filter(classifier_name=DEFAULT_CLASSIFIER, ranking=1,
                             classifier_version=_latest_version(DEFAULT_CLASSIFIER) or "")
    probs = probs.order_by("-probability", "classifier_name", "-classifier_version")
    qs = qs.annotate(
        class_name=Subquery(probs.values("class_name")[:1]),
        probability=Subquery(probs.values("probability")[:1]),
        classifier_name=Subquery(probs.values("classifier_name")[:1]),
    )
    if q.class_filtered:
        # a semi-join on the probability table's (classifier_name, class_name, ranking, probability) index first
        matching = Probability.objects.filter(**{k: v for k, v in (
            ("classifier_name", q.classifier), ("classifier_version", q.classifier_version),
            ("class_name", q.class_name)) if v is not None})
        if q.probability is not None:
            matching = matching.filter(probability__gte=q.probability)
        qs = qs.filter(oid__in=matching.values("oid")).filter(class_name__isnull=False)
    if q.ra is not None:
        qs = qs.filter(oid__in=cone_oids(q.ra, q.dec, q.radius))
    return qs


def ordered(qs, q):
    if q.order_by:
        column = F(ORDER_COLUMNS[q.order_by])
        column = column.desc(nulls_last=True) if q.order_mode == "DESC" else column.asc(nulls_last=True)
        return qs.order_by(column, "oid")
    return qs.order_by("oid")


@dataclass
class Page:
    items: list
    page: int
    page_size: int
    total: int
    has_next: bool

    @property
    def has_prev(self):
        return self.page > 1

    def as_alerce(self):
        """The paginated shape of ALeRCE's API (total is null unless count was asked for)."""
        return {
            "total": self.total,
            "page": self.page,
            "next": self.page + 1 if self.has_next else None,
            "has_next": self.has_next,
            "prev": self.page - 1 if self.has_prev else None,
            "has_prev": self.has_prev,
            "items": self.items,
        }


ITEM_FIELDS = OBJECT_COLUMNS + ("class_name", "classifier_name", "probability", "simulated")


def search_objects(q):
    """One page of objects as ALeRCE's list items (``class``, ``classifier``, ``probability`` added)."""
    qs = ordered(object_queryset(q), q)
    start = (q.page - 1) * q.page_size
    rows = list(qs.values(*ITEM_FIELDS)[start:start + q.page_size + 1])
    has_next = len(rows) > q.page_size
    items = []
    for row in rows[:q.page_size]:
        row["class"] = row.pop("class_name")
        row["classifier"] = row.pop("classifier_name")
        items.append(row)
    total = qs.count() if q.count else None
    return Page(items=items, page=q.page, page_size=q.page_size, total=total, has_next=has_next)
