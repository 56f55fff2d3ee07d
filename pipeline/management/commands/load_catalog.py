from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from pipeline.steps.xmatch import build_local_index, read_catalog_table


class Command(BaseCommand):
    help = "Build the local cross-match index (AllWISE-like table: CSV, Parquet or FITS) used by XMATCH_BACKEND=local."

    def add_arguments(self, parser):
        parser.add_argument("table", help="Catalogue file with ra/dec (deg), an id column and W1-W4/J/H/K photometry")
        parser.add_argument("--out", default=settings.XMATCH_LOCAL_INDEX, help="Index file to write")

    def handle(self, *args, table, out, **opts):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        catalog = read_catalog_table(table)
        build_local_index(catalog, out)
        self.stdout.write(f"indexed {len(catalog)} sources from {table} into {out}")
