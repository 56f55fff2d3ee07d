import json

from django.core.management.base import BaseCommand, CommandError

from pipeline.output import streams


class Command(BaseCommand):
    help = "Print the output stream for a person: one line per processed alert (or the whole message as JSON)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=None, help="Stream to read (default OUTPUT_STREAM_URL)")
        parser.add_argument("--from-start", action="store_true", help="Begin with the oldest message kept")
        parser.add_argument("--count", type=int, default=None, help="Stop after this many messages")
        parser.add_argument("--json", action="store_true", help="Print each message as JSON")
        parser.add_argument("--no-follow", action="store_true", help="Stop when no new message comes (Redis)")

    def handle(self, *args, **opts):
        stream = streams.output_stream(opts["url"])
        if stream is None:
            raise CommandError("the output stream is off (OUTPUT_STREAM_URL is empty); pass --url")
        self.stderr.write(f"listening to {stream.name}")
        block_ms = 0 if opts["no_follow"] else 1000
        try:
            for entry_id, message in stream.read(from_start=opts["from_start"], block_ms=block_ms, count=opts["count"]):
                if opts["json"]:
                    self.stdout.write(json.dumps(message, default=str))
                else:
                    self.stdout.write(f"{entry_id:<18} {streams.describe(message)}")
        except KeyboardInterrupt:
            pass
