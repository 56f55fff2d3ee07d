import pandas as pd
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pipeline.offline import lightcurves as lc_files
from pipeline.steps import lc_classifier


class Command(BaseCommand):
    help = ("Light-curve classifier probabilities for light curves in files (not in the database): "
            "DETECTIONS.csv (oid, mjd, fid, magpsf, sigmapsf -- or mag, magerr) and optional non-detections "
            "(oid, mjd, fid, diffmaglim). Writes oid, classifier_name, class_name, probability, ranking; objects "
            "with fewer than 6 detections in g and in r get no rows. Detections are used as given (no correction).")

    def add_arguments(self, parser):
        parser.add_argument("detections")
        parser.add_argument("--non-detections")
        parser.add_argument("--out", required=True)
        parser.add_argument("--model", default=settings.LC_CLASSIFIER_MODEL)
        parser.add_argument("--jobs", type=int, default=1)
        parser.add_argument("--use-corrected", action="store_true",
                            help="Objects whose every detection has magpsf_corr (and sigmapsf_corr) are taken as "
                                 "corrected variable stars and that light curve is used")

    def handle(self, *args, detections, non_detections, out, model, jobs, use_corrected, **opts):
        classifier, _ = lc_classifier.load(model)
        try:
            det = pd.read_csv(detections, low_memory=False)
            nd = pd.read_csv(non_detections, low_memory=False) if non_detections else None
            rows, left_out = lc_files.classify_lightcurves(classifier, det, nd, jobs=jobs,
                                                           use_corrected=use_corrected)
        except (lc_files.InputError, OSError, pd.errors.ParserError) as exc:
            raise CommandError(str(exc))
        columns = ["oid", "classifier_name", "classifier_version", "class_name", "probability", "ranking"]
        rows[columns].to_csv(out, index=False)
        n = rows["oid"].nunique()
        self.stdout.write(f"{n} objects classified by {classifier.version}, {len(left_out)} below the gate -> {out}")
        for oid, reason in sorted(left_out.items()):
            self.stdout.write(f"  {oid}: {reason}")
