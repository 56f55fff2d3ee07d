from django.core.management.base import BaseCommand

from pipeline.simulation.catalog import simulated_allwise
from pipeline.simulation.night import PUBLISHER, plan_night, write_night


class Command(BaseCommand):
    help = (
        "Write a SIMULATED night of ZTF-schema alerts (<candid>.avro, truth.csv) and a simulated AllWISE-like "
        "catalogue (allwise_simulated.csv) into OUT_DIR."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir")
        parser.add_argument("--objects", type=int, default=300)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--mjd", type=float, default=None, help="Night (MJD); default 60400")

    def handle(self, *args, out_dir, objects, seed, mjd, **opts):
        night = plan_night(objects, seed=seed, mjd=mjd)
        paths = write_night(night, out_dir)
        catalog = simulated_allwise(night.objects, seed=seed)
        catalog.to_csv(f"{out_dir}/allwise_simulated.csv", index=False)
        self.stdout.write(
            f"wrote {len(paths)} simulated alerts of {objects} objects and {len(catalog)} simulated AllWISE sources "
            f"to {out_dir} (publisher: {PUBLISHER!r})"
        )
