from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Train the stamp classifier (ALeRCE's rotation-invariant CNN) on real weakly labeled alerts of "
        "../shared/data plus SIMULATED alerts; write the model, its version and model card into models/."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", default=str(settings.STAMP_CLASSIFIER_DIR))
        parser.add_argument("--data", default=str(settings.SHARED_DATA_DIR), help="The shared data folder")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=12)
        parser.add_argument("--sim-per-class", type=int, default=1200)
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--model-version", default="1.1.0")

    def handle(self, *args, **opts):
        from pipeline.training.stamp_classifier import train

        data = Path(opts["data"])
        if not (data / "ztf_alerts").exists():
            raise CommandError(f"no training data: {data}/ztf_alerts is absent (the real packets of ../shared/data)")
        train(data, opts["out"], sim_per_class=opts["sim_per_class"], epochs=opts["epochs"],
              batch_size=opts["batch_size"], seed=opts["seed"], version=opts["model_version"],
              log_write=self.stdout.write)
        self.stdout.write(f"model, model.json and model_card.md written to {opts['out']}")
