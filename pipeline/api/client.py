"""What the public ``alerce`` client (2.3.x ``default_config.json``) needs to read this server: its ZTF
routes, where the API serves them, and a complete config file pointing the client here."""

# the client's ZTF_ROUTES (forced_photometry is ALeRCE's v2 route; the client's ZTF section uses it)
CLIENT_ROUTES = {
    "objects": "/ztf/v1/objects",
    "single_object": "/ztf/v1/objects/%s",
    "detections": "/ztf/v1/objects/%s/detections",
    "non_detections": "/ztf/v1/objects/%s/non_detections",
    "lightcurve": "/ztf/v1/objects/%s/lightcurve",
    "magstats": "/ztf/v1/objects/%s/magstats",
    "probabilities": "/ztf/v1/objects/%s/probabilities",
    "features": "/ztf/v1/objects/%s/features",
    "single_feature": "/ztf/v1/objects/%s/features/%s",
    "classifiers": "/ztf/v1/classifiers",
    "classifier_classes": "/ztf/v1/classifiers/%s/%s/classes",
    "forced_photometry": "/v2/lightcurve/forced-photometry/%s",
}


def client_config(base_url):
    """A complete config file for the alerce client: its ``ztf`` and ``stamps_ztf`` sections point here; the
    LSST sections (``multisurvey``, ``stamps``) keep ALeRCE's public services, which this broker does not serve."""
    return {
        "multisurvey": {"URL_MS": "https://api-lsst.alerce.online/", "ROUTES_MS": ALERCE_LSST_ROUTES},
        "ztf": {"ZTF_API_URL": base_url, "ZTF_ROUTES": dict(CLIENT_ROUTES)},
        "stamps": {"STAMP_URL": "https://api-lsst.alerce.online/stamps_api",
                   "AVRO_ROUTES": {"get_stamp": "/stamp", "get_avro": "/get_avro"}},
        "stamps_ztf": {"AVRO_URL": base_url, "AVRO_ROUTES": {"get_stamp": "/get_stamp", "get_avro": "/get_avro"}},
    }


ALERCE_LSST_ROUTES = {
    "objects": "object_api/list_objects", "single_object": "object_api/object",
    "detections": "lightcurve_api/detections", "forced_photometry": "lightcurve_api/forced-photometry",
    "non_detections": "lightcurve_api/non_detections", "lightcurve": "lightcurve_api/lightcurve",
    "probabilities": "probability_api/probability",
}
