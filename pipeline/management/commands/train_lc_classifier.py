from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from pipeline.training import lc_classifier as lc_training


class Command(BaseCommand):
    help = ("Train the light-curve classifier (balanced hierarchical random forest, plus the outlier "
            "isolation forests) on the real labeled ZTF light curves of ../shared/data and SIMULATED ones; "
            "writes the model, metrics, confusion matrices and MODEL_CARD.md. Seeded and reproducible.")

    def add_arguments(self, parser):
        d = lc_training.TrainingConfig()
        parser.add_argument("--data", default=str(settings.SHARED_DATA_DIR), help="The shared data folder")
        parser.add_argument("--out", default=str(Path(settings.LC_CLASSIFIER_MODEL).parent))
        parser.add_argument("--seed", type=int, default=d.seed)
        parser.add_argument("--trees", type=int, default=d.n_estimators)
        parser.add_argument("--max-depth", type=int, default=d.max_depth, help="0: unlimited")
        parser.add_argument("--simulated-per-class", type=int, default=d.simulated_per_class)
        parser.add_argument("--jobs", type=int, default=d.jobs)

    def handle(self, *args, data, out, seed, trees, max_depth, simulated_per_class, jobs, **opts):
        if not (Path(data) / "labeled").exists():
            raise CommandError(f"no labeled data under {data} (../shared/data/labeled)")
        config = lc_training.TrainingConfig(seed=seed, n_estimators=trees, max_depth=max_depth or None,
                                            simulated_per_class=simulated_per_class,
                                            simulated_cv_nova=simulated_per_class, jobs=jobs)
        bar = tqdm(unit="objects", desc="features", file=self.stderr._out)
        summary = lc_training.train(data, out, config, progress=bar.update, log=lambda m: tqdm.write(m, file=self.stderr._out))
        bar.close()
        held = summary["held_out"]
        self.stdout.write(f"model {summary['version']} written to {out} ({summary['model_bytes'] / 1e6:.1f} MB) "
                          f"in {summary['timings_s']['total']:.0f} s")
        for part in ("real", "simulated"):
            if part in held:
                self.stdout.write(f"held-out {part}: top-level accuracy {held[part]['top_accuracy']:.3f}, "
                                  f"15-class accuracy {held[part]['class_accuracy']:.3f} ({held[part]['n']} objects)")
