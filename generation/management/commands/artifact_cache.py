import json
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import artifacts


class Command(BaseCommand):
    help = (
        "List this machine's cache of artifacts read from a remote store (PREFLOOP_CACHE_DIR), least recently used "
        "first; --prune-to-gb deletes the least recently used copies beyond that size (never one used within the hour)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--prune-to-gb", type=float, default=None, help="Keep at most this many GB.")

    def handle(self, *args, **options):
        limit = options["prune_to_gb"]
        if limit is not None:
            if limit < 0:
                raise CommandError("--prune-to-gb must be 0 or more.")
            removed = artifacts.prune_cache(int(limit * 1024**3))
            self.stdout.write(f"Deleted {len(removed)} cached copies ({sum(e.bytes for e in removed) / 1e9:.2f} GB).")
        entries = artifacts.cache_entries()
        for entry in entries:
            origin = json.loads((entry.path / artifacts.CACHE_MARKER).read_text()).get("uri", "?")
            self.stdout.write(f"{entry.bytes / 1e6:10.1f} MB  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.last_used))}  {origin}  ({entry.path.name[:12]})")
        self.stdout.write(f"{len(entries)} cached copies, {sum(e.bytes for e in entries) / 1e9:.2f} GB in {settings.ARTIFACTS_CACHE_DIR}.")
