"""Django admin for every table: search by oid/candid, filters by band, date and flags."""
from django.contrib import admin
from django.utils import timezone

from pipeline import models

MJD_UNIX_EPOCH = 40587.0


def mjd_now():
    return MJD_UNIX_EPOCH + timezone.now().timestamp() / 86400.0


class MjdAgeFilter(admin.SimpleListFilter):
    """Filter an MJD column by how recent it is (last night, week, month)."""

    title = "date (MJD)"
    parameter_name = "mjd_age"
    mjd_field = "mjd"
    ages = (("1", "last 24 hours"), ("7", "last 7 days"), ("30", "last 30 days"), ("older", "older than 30 days"))

    def lookups(self, request, model_admin):
        return self.ages

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value == "older":
            return queryset.filter(**{f"{self.mjd_field}__lt": mjd_now() - 30})
        return queryset.filter(**{f"{self.mjd_field}__gte": mjd_now() - float(value)})


class LastMjdFilter(MjdAgeFilter):
    title = "last detection (MJD)"
    parameter_name = "lastmjd_age"
    mjd_field = "lastmjd"


class ReadOnlyPipelineAdmin(admin.ModelAdmin):
    """Pipeline output is written by the steps; the admin shows it and lets staff delete it."""

    list_per_page = 100
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False


class DetectionInline(ReadOnlyInline):
    model = models.Detection
    fields = ("candid", "mjd", "fid", "magpsf", "sigmapsf", "magpsf_corr", "isdiffpos", "corrected", "dubious", "rb")
    ordering = ("mjd",)
    show_change_link = True


class MagStatsInline(ReadOnlyInline):
    model = models.MagStats
    fields = ("fid", "ndet", "ndubious", "magmean", "magmin", "magmax", "magmean_corr", "saturation_rate", "firstmjd",
              "lastmjd")


@admin.register(models.Object)
class ObjectAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "meanra", "meandec", "ndet", "firstmjd", "lastmjd", "corrected", "stellar", "simulated")
    search_fields = ("=oid",)
    list_filter = ("corrected", "stellar", "simulated", "survey", LastMjdFilter)
    inlines = [MagStatsInline, DetectionInline]


@admin.register(models.Detection)
class DetectionAdmin(ReadOnlyPipelineAdmin):
    list_display = ("candid", "oid", "survey", "mjd", "fid", "magpsf", "sigmapsf", "magpsf_corr", "psf_flux",
                    "isdiffpos", "corrected", "dubious", "rb", "has_stamp")
    search_fields = ("=candid", "=oid__oid")
    list_filter = ("survey", "fid", MjdAgeFilter, "corrected", "dubious", "has_stamp", "isdiffpos")
    raw_id_fields = ("oid",)


@admin.register(models.NonDetection)
class NonDetectionAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "fid", "mjd", "diffmaglim")
    search_fields = ("=oid__oid",)
    list_filter = ("fid", MjdAgeFilter)
    raw_id_fields = ("oid",)


@admin.register(models.ForcedPhotometry)
class ForcedPhotometryAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "survey", "fid", "mjd", "forcediffimflux", "forcediffimfluxunc", "magzpsci", "diffmaglim",
                    "procstatus")
    search_fields = ("=oid__oid", "=pid")
    list_filter = ("survey", "fid", MjdAgeFilter, "procstatus")
    raw_id_fields = ("oid",)


@admin.register(models.MagStats)
class MagStatsAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "fid", "ndet", "ndubious", "magmean", "magmedian", "magmin", "magmax", "magsigma",
                    "magmean_corr", "saturation_rate", "corrected", "stellar")
    search_fields = ("=oid__oid",)
    list_filter = ("fid", "corrected", "stellar")
    raw_id_fields = ("oid",)


@admin.register(models.Ps1)
class Ps1Admin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "candid", "objectidps1", "sgscore1", "distpsnr1", "srmag1", "nmtchps")
    search_fields = ("=oid__oid", "=candid", "=objectidps1")


@admin.register(models.Gaia)
class GaiaAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "candid", "neargaia", "maggaia", "neargaiabright", "maggaiabright")
    search_fields = ("=oid__oid", "=candid")


@admin.register(models.SolarSystem)
class SolarSystemAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "candid", "ssnamenr", "ssdistnr", "ssmagnr")
    search_fields = ("=oid__oid", "=candid", "ssnamenr")


@admin.register(models.AllWise)
class AllWiseAdmin(ReadOnlyPipelineAdmin):
    list_display = ("catid", "ra", "dec", "W1mag", "W2mag", "W3mag", "W4mag", "Jmag", "Hmag", "Kmag")
    search_fields = ("=catid",)


@admin.register(models.Xmatch)
class XmatchAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "catalog", "catid", "dist")
    search_fields = ("=oid__oid", "=catid")
    list_filter = ("catalog",)
    raw_id_fields = ("oid",)


@admin.register(models.XmatchPending)
class XmatchPendingAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "catalog", "attempts", "updated", "last_error")
    search_fields = ("=oid__oid",)
    list_filter = ("catalog",)


@admin.register(models.Feature)
class FeatureAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "name", "fid", "value", "missing_reason", "version")
    search_fields = ("=oid__oid", "name")
    list_filter = ("fid", "version", "missing_reason")
    raw_id_fields = ("oid",)


@admin.register(models.ObjectFeatureState)
class ObjectFeatureStateAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "version", "lc_used", "ndet", "computed")
    search_fields = ("=oid__oid",)
    list_filter = ("version", "lc_used")


@admin.register(models.RawAlert)
class RawAlertAdmin(ReadOnlyPipelineAdmin):
    list_display = ("candid", "oid", "schemavsn", "publisher", "size", "batch_id", "ingested", "archive_key")
    search_fields = ("=candid", "=oid", "=batch_id")
    list_filter = ("schemavsn", "publisher", "ingested")


@admin.register(models.Quarantine)
class QuarantineAdmin(ReadOnlyPipelineAdmin):
    list_display = ("created", "step", "reason", "source", "oid", "candid", "size", "archive_key")
    search_fields = ("=oid", "=candid", "reason", "source", "=sha256")
    list_filter = ("step", "created")


@admin.register(models.StepTiming)
class StepTimingAdmin(ReadOnlyPipelineAdmin):
    list_display = ("batch_id", "step", "started", "finished", "n", "hostname")
    search_fields = ("=batch_id",)
    list_filter = ("step", "hostname", "finished")


@admin.register(models.BatchCanvas)
class BatchCanvasAdmin(ReadOnlyPipelineAdmin):
    list_display = ("batch_id", "state", "launched", "finished", "error")
    list_filter = ("state",)
    search_fields = ("batch_id", "error")


@admin.register(models.Probability)
class ProbabilityAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "classifier_name", "classifier_version", "class_name", "probability", "ranking")
    search_fields = ("=oid__oid", "class_name")
    list_filter = ("classifier_name", "classifier_version", "class_name", "ranking")
    raw_id_fields = ("oid",)


@admin.register(models.OutlierScore)
class OutlierScoreAdmin(ReadOnlyPipelineAdmin):
    list_display = ("oid", "branch", "score", "is_outlier", "version")
    search_fields = ("=oid__oid",)
    list_filter = ("branch", "is_outlier", "version")
    raw_id_fields = ("oid",)


@admin.register(models.PublishedAlert)
class PublishedAlertAdmin(ReadOnlyPipelineAdmin):
    list_display = ("candid", "oid", "stream", "batch_id", "published")
    search_fields = ("=candid", "=oid", "=batch_id")
    list_filter = ("stream", "published")


@admin.register(models.Deployment)
class DeploymentAdmin(ReadOnlyPipelineAdmin):
    list_display = ("key", "created")


@admin.register(models.ContestedCandid)
class ContestedCandidAdmin(ReadOnlyPipelineAdmin):
    list_display = ("survey", "candid", "created")
    search_fields = ("=candid",)


class WatchlistTargetInline(admin.TabularInline):
    model = models.WatchlistTarget
    extra = 0
    show_change_link = True


@admin.register(models.Watchlist)
class WatchlistAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "active", "created")
    list_filter = ("active",)
    search_fields = ("name", "owner__username")
    inlines = [WatchlistTargetInline]


@admin.register(models.WatchlistTarget)
class WatchlistTargetAdmin(admin.ModelAdmin):
    list_display = ("name", "watchlist", "ra", "dec", "radius")
    search_fields = ("name", "watchlist__name")
    raw_id_fields = ("watchlist",)


@admin.register(models.WatchlistMatch)
class WatchlistMatchAdmin(ReadOnlyPipelineAdmin):
    list_display = ("matched", "target", "oid", "candid", "mjd", "magnitude", "fid", "separation")
    search_fields = ("=oid", "=candid", "target__name")
    list_filter = ("matched",)


@admin.register(models.SavedFilter)
class SavedFilterAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "active", "updated")
    list_filter = ("active",)
    search_fields = ("name", "owner__username", "expression")


@admin.register(models.FilterMatch)
class FilterMatchAdmin(ReadOnlyPipelineAdmin):
    list_display = ("matched", "filter", "oid", "candid", "batch_id")
    search_fields = ("=oid", "=candid", "filter__name")
    list_filter = ("matched",)


@admin.register(models.Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("owner", "kind", "target", "watchlist", "filter", "format", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("target", "owner__username")


@admin.register(models.Notification)
class NotificationAdmin(ReadOnlyPipelineAdmin):
    list_display = ("created", "delivery", "state", "attempts", "sent", "last_error")
    list_filter = ("state",)


@admin.register(models.DeadLetter)
class DeadLetterAdmin(ReadOnlyPipelineAdmin):
    list_display = ("died", "target", "attempts", "error")
    search_fields = ("target", "error")
