"""Tables of the broker. Names follow ALeRCE's public ZTF database so its users feel at home.

Magnitudes are AB, times MJD, filter ids ZTF's (1 g, 2 r, 3 i) and, for Rubin/LSST, 10 + the band's
index in ugrizy (u 10, g 11, r 12, i 13, z 14, y 15; see pipeline/surveys/lsst.py).
"""
from django.db import models

BANDS = [(1, "g"), (2, "r"), (3, "i"),
         (10, "LSST u"), (11, "LSST g"), (12, "LSST r"), (13, "LSST i"), (14, "LSST z"), (15, "LSST y")]
SURVEYS = [("ztf", "ZTF"), ("lsst", "Rubin/LSST")]


class Object(models.Model):
    oid = models.CharField(primary_key=True, max_length=32)
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    simulated = models.BooleanField(default=False, help_text="Packet came from the simulator, not a telescope")
    meanra = models.FloatField(help_text="deg")
    meandec = models.FloatField(help_text="deg")
    sigmara = models.FloatField(null=True, blank=True, help_text="arcsec")
    sigmadec = models.FloatField(null=True, blank=True, help_text="arcsec")
    firstmjd = models.FloatField(null=True, blank=True)
    lastmjd = models.FloatField(null=True, blank=True)
    deltamjd = models.FloatField(null=True, blank=True)
    ndet = models.IntegerField(default=0)
    ndethist = models.IntegerField(null=True, blank=True)
    ncovhist = models.IntegerField(null=True, blank=True)
    mjdstarthist = models.FloatField(null=True, blank=True)
    mjdendhist = models.FloatField(null=True, blank=True)
    corrected = models.BooleanField(null=True, blank=True)
    stellar = models.BooleanField(null=True, blank=True)
    step_id_corr = models.CharField(max_length=32, blank=True, default="")
    g_r_max = models.FloatField(null=True, blank=True)
    g_r_max_corr = models.FloatField(null=True, blank=True)
    g_r_mean = models.FloatField(null=True, blank=True)
    g_r_mean_corr = models.FloatField(null=True, blank=True)
    stamp_candid = models.BigIntegerField(
        null=True, blank=True,
        help_text="Alert the stamp classifier last took as the object's first (earliest with cutouts)")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "object"
        indexes = [
            models.Index(fields=["meandec", "meanra"], name="object_position"),
            models.Index(fields=["lastmjd"], name="object_lastmjd"),
            models.Index(fields=["firstmjd"], name="object_firstmjd"),
        ]

    def __str__(self):
        return self.oid


class Detection(models.Model):
    id = models.BigAutoField(primary_key=True)
    candid = models.BigIntegerField(help_text="Alert candidate id (ZTF candid, Rubin diaSourceId): unique per survey")
    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="detections", db_index=False
    )  # covered by the (oid, ...) index below
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    mjd = models.FloatField()
    fid = models.SmallIntegerField(choices=BANDS)
    pid = models.BigIntegerField(null=True, blank=True, help_text="ZTF processing id; Rubin visit")
    ra = models.FloatField()
    dec = models.FloatField()
    magpsf = models.FloatField(null=True, blank=True, help_text="AB; null only for a Rubin source of zero flux")
    sigmapsf = models.FloatField(null=True, blank=True)
    magap = models.FloatField(null=True, blank=True)
    sigmagap = models.FloatField(null=True, blank=True)
    diffmaglim = models.FloatField(null=True, blank=True)
    isdiffpos = models.SmallIntegerField(help_text="+1 positive difference, -1 negative")
    rb = models.FloatField(null=True, blank=True, help_text="ZTF RealBogus; Rubin reliability")
    drb = models.FloatField(null=True, blank=True)
    rbversion = models.CharField(max_length=16, null=True, blank=True)
    drbversion = models.CharField(max_length=16, null=True, blank=True)
    magnr = models.FloatField(null=True, blank=True)
    sigmagnr = models.FloatField(null=True, blank=True)
    distnr = models.FloatField(null=True, blank=True)
    chinr = models.FloatField(null=True, blank=True)
    sharpnr = models.FloatField(null=True, blank=True)
    fwhm = models.FloatField(null=True, blank=True)
    elong = models.FloatField(null=True, blank=True)
    nneg = models.IntegerField(null=True, blank=True)
    nbad = models.IntegerField(null=True, blank=True)
    field = models.IntegerField(null=True, blank=True)
    rcid = models.IntegerField(null=True, blank=True)
    programid = models.IntegerField(null=True, blank=True)
    sgscore1 = models.FloatField(null=True, blank=True)
    distpsnr1 = models.FloatField(null=True, blank=True)
    ssdistnr = models.FloatField(null=True, blank=True)
    ssmagnr = models.FloatField(null=True, blank=True)
    ssnamenr = models.CharField(max_length=32, null=True, blank=True)
    has_stamp = models.BooleanField(default=False)
    parent_candid = models.BigIntegerField(null=True, blank=True, help_text="Alert that delivered this row")
    # Rubin's fluxes (nJy), kept as they came: magpsf derives from psf_flux.
    psf_flux = models.FloatField(null=True, blank=True, help_text="nJy, difference image (Rubin)")
    psf_flux_err = models.FloatField(null=True, blank=True, help_text="nJy (Rubin)")
    science_flux = models.FloatField(null=True, blank=True, help_text="nJy, science image (Rubin)")
    science_flux_err = models.FloatField(null=True, blank=True, help_text="nJy (Rubin)")
    # Filled by the correction step.
    magpsf_corr = models.FloatField(null=True, blank=True)
    sigmapsf_corr = models.FloatField(null=True, blank=True)
    sigmapsf_corr_ext = models.FloatField(null=True, blank=True)
    corrected = models.BooleanField(null=True, blank=True)
    dubious = models.BooleanField(null=True, blank=True)
    corr_note = models.CharField(max_length=64, blank=True, default="", help_text="Why no corrected value")
    step_id_corr = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        db_table = "detection"
        constraints = [models.UniqueConstraint(fields=["candid", "survey"], name="detection_candid_survey")]
        indexes = [models.Index(fields=["oid", "fid", "mjd"], name="detection_oid_fid_mjd")]

    def __str__(self):
        return str(self.candid)


class NonDetection(models.Model):
    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="non_detections", db_index=False
    )  # covered by the (oid, ...) index below
    fid = models.SmallIntegerField(choices=BANDS)
    mjd = models.FloatField()
    diffmaglim = models.FloatField()
    parent_candid = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "non-detection"
        db_table = "non_detection"
        constraints = [models.UniqueConstraint(fields=["oid", "fid", "mjd"], name="non_detection_unique")]


class ForcedPhotometry(models.Model):
    """Forced PSF photometry at the object's position on each difference image (ZTF ``fp_hists``).

    Fluxes are in DN at the image's zero point ``magzpsci``; they may be negative (no sentinel left).
    Rubin's ``prvDiaForcedSources`` are in nJy, with ``magzpsci`` = 31.4 (the AB zero point of a nJy).
    """

    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="forced_photometry", db_index=False
    )  # covered by the (oid, fid, mjd) constraint below
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    mjd = models.FloatField()
    fid = models.SmallIntegerField(choices=BANDS)
    pid = models.BigIntegerField(null=True, blank=True)
    field = models.IntegerField(null=True, blank=True)
    rcid = models.IntegerField(null=True, blank=True)
    programid = models.IntegerField(null=True, blank=True)
    diffmaglim = models.FloatField(null=True, blank=True)
    forcediffimflux = models.FloatField(null=True, blank=True)
    forcediffimfluxunc = models.FloatField(null=True, blank=True)
    procstatus = models.CharField(max_length=64, null=True, blank=True)
    magzpsci = models.FloatField(null=True, blank=True)
    magzpsciunc = models.FloatField(null=True, blank=True)
    magzpscirms = models.FloatField(null=True, blank=True)
    clrcoeff = models.FloatField(null=True, blank=True)
    clrcounc = models.FloatField(null=True, blank=True)
    exptime = models.FloatField(null=True, blank=True)
    sciinpseeing = models.FloatField(null=True, blank=True)
    scibckgnd = models.FloatField(null=True, blank=True)
    scisigpix = models.FloatField(null=True, blank=True)
    adpctdif1 = models.FloatField(null=True, blank=True)
    adpctdif2 = models.FloatField(null=True, blank=True)
    distnr = models.FloatField(null=True, blank=True)
    ranr = models.FloatField(null=True, blank=True)
    decnr = models.FloatField(null=True, blank=True)
    magnr = models.FloatField(null=True, blank=True)
    sigmagnr = models.FloatField(null=True, blank=True)
    chinr = models.FloatField(null=True, blank=True)
    sharpnr = models.FloatField(null=True, blank=True)
    parent_candid = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "forced_photometry"
        verbose_name_plural = "forced photometry"
        constraints = [models.UniqueConstraint(fields=["oid", "fid", "mjd"], name="forced_photometry_unique")]


class Ps1(models.Model):
    """The three nearest Pan-STARRS1 sources the alert carries; newest alert wins."""

    oid = models.OneToOneField(Object, primary_key=True, on_delete=models.CASCADE, db_column="oid")
    candid = models.BigIntegerField()
    objectidps1 = models.BigIntegerField(null=True, blank=True)
    sgmag1 = models.FloatField(null=True, blank=True)
    srmag1 = models.FloatField(null=True, blank=True)
    simag1 = models.FloatField(null=True, blank=True)
    szmag1 = models.FloatField(null=True, blank=True)
    sgscore1 = models.FloatField(null=True, blank=True)
    distpsnr1 = models.FloatField(null=True, blank=True)
    objectidps2 = models.BigIntegerField(null=True, blank=True)
    sgmag2 = models.FloatField(null=True, blank=True)
    srmag2 = models.FloatField(null=True, blank=True)
    simag2 = models.FloatField(null=True, blank=True)
    szmag2 = models.FloatField(null=True, blank=True)
    sgscore2 = models.FloatField(null=True, blank=True)
    distpsnr2 = models.FloatField(null=True, blank=True)
    objectidps3 = models.BigIntegerField(null=True, blank=True)
    sgmag3 = models.FloatField(null=True, blank=True)
    srmag3 = models.FloatField(null=True, blank=True)
    simag3 = models.FloatField(null=True, blank=True)
    szmag3 = models.FloatField(null=True, blank=True)
    sgscore3 = models.FloatField(null=True, blank=True)
    distpsnr3 = models.FloatField(null=True, blank=True)
    nmtchps = models.IntegerField(null=True, blank=True)

    class Meta:
        db_table = "ps1_ztf"
        verbose_name = "PS1 match"
        verbose_name_plural = "PS1 matches"


class Gaia(models.Model):
    oid = models.OneToOneField(Object, primary_key=True, on_delete=models.CASCADE, db_column="oid")
    candid = models.BigIntegerField()
    neargaia = models.FloatField(null=True, blank=True, help_text="arcsec")
    neargaiabright = models.FloatField(null=True, blank=True, help_text="arcsec")
    maggaia = models.FloatField(null=True, blank=True)
    maggaiabright = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "gaia_ztf"
        verbose_name = "Gaia match"
        verbose_name_plural = "Gaia matches"


class SolarSystem(models.Model):
    oid = models.OneToOneField(Object, primary_key=True, on_delete=models.CASCADE, db_column="oid")
    candid = models.BigIntegerField()
    ssdistnr = models.FloatField(null=True, blank=True, help_text="arcsec")
    ssmagnr = models.FloatField(null=True, blank=True)
    ssnamenr = models.CharField(max_length=32, null=True, blank=True)

    class Meta:
        db_table = "ss_ztf"
        verbose_name = "solar-system match"
        verbose_name_plural = "solar-system matches"


class RawAlert(models.Model):
    """Index of the raw archive: where each packet's bytes are kept."""

    id = models.BigAutoField(primary_key=True)
    candid = models.BigIntegerField()
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    oid = models.CharField(max_length=32, db_index=True)
    archive_key = models.CharField(max_length=255)
    schemavsn = models.CharField(max_length=16, null=True, blank=True)
    publisher = models.CharField(max_length=128, null=True, blank=True)
    size = models.IntegerField()
    batch_id = models.CharField(max_length=64, db_index=True)
    ingested = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "raw_alert"
        constraints = [models.UniqueConstraint(fields=["candid", "survey"], name="raw_alert_candid_survey")]


class Quarantine(models.Model):
    """Input that could not be used, with the reason; its bytes stay in the archive."""

    sha256 = models.CharField(max_length=64)
    reason = models.TextField()
    source = models.CharField(max_length=512, help_text="File (and archive member) it came from")
    archive_key = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField(default=0, help_text="Bytes of the whole input (the archive keeps a bounded prefix)")
    oid = models.CharField(max_length=32, blank=True, default="")
    candid = models.BigIntegerField(null=True, blank=True)
    batch_id = models.CharField(max_length=64, blank=True, default="")
    step = models.CharField(max_length=32, default="ingest", help_text="The step that could not use it")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "quarantine"
        constraints = [models.UniqueConstraint(fields=["sha256", "step"], name="quarantine_unique_bytes_step")]


class ContestedCandid(models.Model):
    """A candid that the histories of several objects carry and that is the own alert of none of them:
    stored for none, whatever the order its claims arrive in (every claim is quarantined)."""

    survey = models.CharField(max_length=16, default="ztf")
    candid = models.BigIntegerField()
    created = models.DateTimeField()

    class Meta:
        db_table = "contested_candid"
        constraints = [models.UniqueConstraint(fields=["survey", "candid"], name="contested_candid_unique")]


class StepTiming(models.Model):
    """When each step started and finished on each batch (for latency distributions)."""

    batch_id = models.CharField(max_length=64)
    step = models.CharField(max_length=32)
    started = models.DateTimeField()
    finished = models.DateTimeField()
    n = models.IntegerField(default=0, help_text="Items the step handled")
    hostname = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        db_table = "step_timing"
        constraints = [models.UniqueConstraint(fields=["batch_id", "step"], name="step_timing_unique")]
        indexes = [models.Index(fields=["step", "finished"], name="step_timing_step_finished")]

    @property
    def seconds(self):
        return (self.finished - self.started).total_seconds()


class MagStats(models.Model):
    """Per object and band statistics of the light curve (uncorrected and corrected magnitudes)."""

    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="magstats", db_index=False
    )  # covered by the (oid, ...) index below
    fid = models.SmallIntegerField(choices=BANDS)
    stellar = models.BooleanField(null=True, blank=True)
    corrected = models.BooleanField(null=True, blank=True)
    ndet = models.IntegerField()
    ndubious = models.IntegerField(default=0)
    firstmjd = models.FloatField(null=True, blank=True)
    lastmjd = models.FloatField(null=True, blank=True)
    magmean = models.FloatField(null=True, blank=True)
    magmedian = models.FloatField(null=True, blank=True)
    magmax = models.FloatField(null=True, blank=True)
    magmin = models.FloatField(null=True, blank=True)
    magsigma = models.FloatField(null=True, blank=True)
    maglast = models.FloatField(null=True, blank=True)
    magfirst = models.FloatField(null=True, blank=True)
    magmean_corr = models.FloatField(null=True, blank=True)
    magmedian_corr = models.FloatField(null=True, blank=True)
    magmax_corr = models.FloatField(null=True, blank=True)
    magmin_corr = models.FloatField(null=True, blank=True)
    magsigma_corr = models.FloatField(null=True, blank=True)
    maglast_corr = models.FloatField(null=True, blank=True)
    magfirst_corr = models.FloatField(null=True, blank=True)
    dmdt_first = models.FloatField(null=True, blank=True)
    dm_first = models.FloatField(null=True, blank=True)
    sigmadm_first = models.FloatField(null=True, blank=True)
    dt_first = models.FloatField(null=True, blank=True)
    saturation_rate = models.FloatField(
        null=True, blank=True, help_text="Corrected detections brighter than 13.2 mag / corrected detections"
    )
    step_id_corr = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        verbose_name = "magstats row"
        db_table = "magstat"
        verbose_name_plural = "magstats"
        constraints = [models.UniqueConstraint(fields=["oid", "fid"], name="magstat_unique")]


class AllWise(models.Model):
    """An AllWISE source (VizieR II/328/allwise names): W1-W4 (Vega) and the 2MASS J, H, K it carries."""

    catid = models.CharField(primary_key=True, max_length=32, help_text="AllWISE designation")
    ra = models.FloatField()
    dec = models.FloatField()
    W1mag = models.FloatField(null=True, blank=True)
    e_W1mag = models.FloatField(null=True, blank=True)
    W2mag = models.FloatField(null=True, blank=True)
    e_W2mag = models.FloatField(null=True, blank=True)
    W3mag = models.FloatField(null=True, blank=True)
    e_W3mag = models.FloatField(null=True, blank=True)
    W4mag = models.FloatField(null=True, blank=True)
    e_W4mag = models.FloatField(null=True, blank=True)
    Jmag = models.FloatField(null=True, blank=True)
    e_Jmag = models.FloatField(null=True, blank=True)
    Hmag = models.FloatField(null=True, blank=True)
    e_Hmag = models.FloatField(null=True, blank=True)
    Kmag = models.FloatField(null=True, blank=True)
    e_Kmag = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "allwise"
        verbose_name = "AllWISE source"


class Xmatch(models.Model):
    """Nearest catalogue source of an object within the match radius."""

    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="xmatches", db_index=False
    )  # covered by the (oid, ...) index below
    catalog = models.CharField(max_length=32)
    catid = models.CharField(max_length=64)
    dist = models.FloatField(help_text="arcsec")

    class Meta:
        verbose_name = "cross-match"
        db_table = "xmatch"
        verbose_name_plural = "cross-matches"
        constraints = [models.UniqueConstraint(fields=["oid", "catalog"], name="xmatch_unique")]


class XmatchPending(models.Model):
    """Objects whose cross-match failed for a transient reason, queued for a later retry."""

    oid = models.ForeignKey(Object, on_delete=models.CASCADE, db_column="oid")
    catalog = models.CharField(max_length=32)
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    updated = models.DateTimeField()

    class Meta:
        verbose_name = "pending cross-match"
        db_table = "xmatch_pending"
        verbose_name_plural = "pending cross-matches"
        constraints = [models.UniqueConstraint(fields=["oid", "catalog"], name="xmatch_pending_unique")]


class Feature(models.Model):
    """One light-curve feature of an object; missing values are NULL with the reason."""

    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="features", db_index=False
    )  # covered by the (oid, ...) index below
    name = models.CharField(max_length=48)
    fid = models.SmallIntegerField(null=True, blank=True, help_text="Band of a per-band feature; null if multi-band")
    value = models.FloatField(null=True, blank=True)
    missing_reason = models.CharField(max_length=64, blank=True, default="")
    version = models.CharField(max_length=32)

    class Meta:
        db_table = "feature"
        constraints = [models.UniqueConstraint(fields=["oid", "name", "version"], name="feature_unique")]
        indexes = [models.Index(fields=["name", "version"], name="feature_name_version")]


class ObjectFeatureState(models.Model):
    """Which light curve the features of an object were computed from, and when."""

    oid = models.OneToOneField(Object, primary_key=True, on_delete=models.CASCADE, db_column="oid")
    version = models.CharField(max_length=32)
    lc_used = models.CharField(max_length=16, help_text="corrected or uncorrected magnitudes")
    ndet = models.IntegerField(help_text="Detections when computed; a new detection triggers a recompute")
    computed = models.DateTimeField()

    class Meta:
        db_table = "feature_state"


class Probability(models.Model):
    """One class probability of one classifier for one object (ALeRCE's probability table)."""

    oid = models.ForeignKey(
        Object, on_delete=models.CASCADE, db_column="oid", related_name="probabilities", db_index=False
    )  # covered by the unique (oid, ...) constraint
    classifier_name = models.CharField(max_length=64)
    classifier_version = models.CharField(max_length=64)
    class_name = models.CharField(max_length=32)
    probability = models.FloatField()
    ranking = models.SmallIntegerField(help_text="1 for the most probable class of this classifier")

    class Meta:
        db_table = "probability"
        verbose_name_plural = "probabilities"
        constraints = [
            models.UniqueConstraint(
                fields=["oid", "classifier_name", "classifier_version", "class_name"], name="probability_unique"
            )
        ]
        indexes = [
            models.Index(fields=["classifier_name", "class_name", "ranking", "probability"],
                         name="probability_class_query"),
        ]


class OutlierScore(models.Model):
    """How unusual an object is within its predicted light-curve branch (higher: more unusual)."""

    oid = models.ForeignKey(Object, on_delete=models.CASCADE, db_column="oid", related_name="outlier_scores",
                            db_index=False)  # covered by the unique (oid, version) constraint
    version = models.CharField(max_length=64)
    branch = models.CharField(max_length=32, help_text="Predicted top-level class the score is relative to")
    score = models.FloatField()
    is_outlier = models.BooleanField(default=False, help_text="Among the most unusual 1% of its branch")

    class Meta:
        db_table = "outlier_score"
        constraints = [models.UniqueConstraint(fields=["oid", "version"], name="outlier_score_unique")]
        indexes = [models.Index(fields=["branch", "is_outlier", "score"], name="outlier_score_branch")]


class BatchCanvas(models.Model):
    """The step graph launched for a batch: queued, done or failed, or never accepted by the broker."""

    QUEUED, DONE, FAILED, NOT_LAUNCHED, REPAIRED = "queued", "done", "failed", "not_launched", "repaired"
    STATES = [(s, s) for s in (QUEUED, DONE, FAILED, NOT_LAUNCHED, REPAIRED)]

    batch_id = models.CharField(primary_key=True, max_length=64)
    oids = models.JSONField(help_text="Objects the canvas runs on")
    state = models.CharField(max_length=16, choices=STATES, db_index=True)
    result = models.JSONField(null=True, blank=True, help_text="Celery's result tree (AsyncResult.as_tuple())")
    error = models.TextField(blank=True, default="")
    launched = models.DateTimeField()
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "batch_canvas"
        verbose_name_plural = "batch canvases"


class Deployment(models.Model):
    """This database's identity, made once at random (one row): it namespaces what deployments share,
    such as the output stream's dedup keys and default stream name on one Redis."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    key = models.CharField(max_length=32, unique=True)
    created = models.DateTimeField()

    class Meta:
        db_table = "deployment"


class PublishedAlert(models.Model):
    """Alerts already sent to the output stream, so a re-delivered batch sends none of them again."""

    id = models.BigAutoField(primary_key=True)
    candid = models.BigIntegerField()
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    oid = models.CharField(max_length=32, db_index=True)
    stream = models.CharField(max_length=255, help_text="redis://.../<stream> or kafka://.../<topic>")
    batch_id = models.CharField(max_length=64, blank=True, default="")
    published = models.DateTimeField()

    class Meta:
        db_table = "published_alert"
        constraints = [models.UniqueConstraint(fields=["candid", "survey"], name="published_alert_candid_survey")]


# Users act on the stream: watchlists, saved filters and their notifications (issue 25).
class Watchlist(models.Model):
    """A user's named list of sky positions; every new detection is matched against its targets."""

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="watchlists")
    name = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "watchlist"
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="watchlist_owner_name")]


class WatchlistTarget(models.Model):
    id = models.BigAutoField(primary_key=True)
    watchlist = models.ForeignKey(Watchlist, on_delete=models.CASCADE, related_name="targets")
    name = models.CharField(max_length=64)
    ra = models.FloatField(help_text="degrees, ICRS")
    dec = models.FloatField(help_text="degrees, ICRS")
    radius = models.FloatField(help_text="match radius in arcsec (capped by WATCHLIST_MAX_RADIUS_ARCSEC)")

    class Meta:
        db_table = "watchlist_target"


class WatchlistMatch(models.Model):
    """One detection that fell within a target's radius (once per target and alert)."""

    id = models.BigAutoField(primary_key=True)
    target = models.ForeignKey(WatchlistTarget, on_delete=models.CASCADE, related_name="matches")
    oid = models.CharField(max_length=32, db_index=True)
    candid = models.BigIntegerField()
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    mjd = models.FloatField()
    magnitude = models.FloatField(help_text="magpsf of the detection")
    fid = models.SmallIntegerField(choices=BANDS)
    separation = models.FloatField(help_text="arcsec between the detection and the target")
    batch_id = models.CharField(max_length=64, blank=True, default="")
    matched = models.DateTimeField()

    class Meta:
        db_table = "watchlist_match"
        verbose_name_plural = "watchlist matches"
        constraints = [models.UniqueConstraint(fields=["target", "candid", "survey"], name="watchlist_match_unique")]


class SavedFilter(models.Model):
    """A user's condition over what the broker knows of an object after a batch (see the filter language).

    ``expression`` is the user's text; it is compiled against a whitelist of fields, never run as SQL."""

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="saved_filters")
    name = models.CharField(max_length=100)
    expression = models.TextField()
    active = models.BooleanField(default=False, help_text="Runs in the canvas only once activated (after a dry run)")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "saved_filter"
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="saved_filter_owner_name")]


class FilterMatch(models.Model):
    """An alert whose object passed a filter after its batch (once per filter and alert)."""

    id = models.BigAutoField(primary_key=True)
    filter = models.ForeignKey(SavedFilter, on_delete=models.CASCADE, related_name="matches")
    oid = models.CharField(max_length=32, db_index=True)
    candid = models.BigIntegerField(help_text="The object's latest alert when it passed")
    survey = models.CharField(max_length=16, default="ztf", choices=SURVEYS)
    batch_id = models.CharField(max_length=64, blank=True, default="")
    matched = models.DateTimeField()

    class Meta:
        db_table = "filter_match"
        verbose_name_plural = "filter matches"
        constraints = [models.UniqueConstraint(fields=["filter", "candid", "survey"], name="filter_match_unique")]


class Delivery(models.Model):
    """Where the matches of one watchlist or filter go: a stream topic, a signed webhook or an email digest."""

    STREAM, WEBHOOK, EMAIL = "stream", "webhook", "email"
    KINDS = [(k, k) for k in (STREAM, WEBHOOK, EMAIL)]
    JSON, SLACK = "json", "slack"
    FORMATS = [(f, f) for f in (JSON, SLACK)]

    owner = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="deliveries")
    watchlist = models.ForeignKey(Watchlist, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="deliveries")
    filter = models.ForeignKey(SavedFilter, null=True, blank=True, on_delete=models.CASCADE,
                               related_name="deliveries")
    kind = models.CharField(max_length=16, choices=KINDS)
    target = models.CharField(max_length=500, help_text="webhook URL, email address or stream topic name")
    secret = models.CharField(max_length=128, blank=True, default="",
                              help_text="HMAC-SHA256 key of a webhook's signature header")
    format = models.CharField(max_length=16, choices=FORMATS, default=JSON)
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "delivery"
        verbose_name_plural = "deliveries"
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(watchlist__isnull=False, filter__isnull=True)
                           | models.Q(watchlist__isnull=True, filter__isnull=False)),
                name="delivery_one_source",
            )
        ]


class Notification(models.Model):
    """One match to send through one delivery (the outbox): pending, sent, or dead after the last try."""

    PENDING, SENT, DEAD = "pending", "sent", "dead"
    STATES = [(s, s) for s in (PENDING, SENT, DEAD)]

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="notifications")
    watchlist_match = models.ForeignKey(WatchlistMatch, null=True, blank=True, on_delete=models.CASCADE)
    filter_match = models.ForeignKey(FilterMatch, null=True, blank=True, on_delete=models.CASCADE)
    state = models.CharField(max_length=16, choices=STATES, default=PENDING, db_index=True)
    attempts = models.SmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    created = models.DateTimeField()
    sent = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notification"
        constraints = [
            models.UniqueConstraint(fields=["delivery", "watchlist_match"], name="notification_watchlist_once"),
            models.UniqueConstraint(fields=["delivery", "filter_match"], name="notification_filter_once"),
        ]


class DeadLetter(models.Model):
    """A notification that failed its last try: what was to be sent, where, and why it was not."""

    id = models.BigAutoField(primary_key=True)
    notification = models.OneToOneField(Notification, on_delete=models.CASCADE, related_name="dead_letter")
    target = models.CharField(max_length=500)
    body = models.TextField()
    error = models.TextField()
    attempts = models.SmallIntegerField()
    died = models.DateTimeField()

    class Meta:
        db_table = "dead_letter"
