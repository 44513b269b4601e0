from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from config.web import validation_message
from generation import services
from generation.models import ModelVersion


class Command(BaseCommand):
    help = "Register a model version: a Hugging Face id, a local folder or an s3:// URI, optionally with a LoRA adapter folder (local or s3://)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Short unique name, e.g. llama3-8b-instruct.")
        parser.add_argument("base_model", help="Hugging Face id (org/name), local folder, or s3:// URI.")
        parser.add_argument("--adapter", default="", help="PEFT LoRA adapter folder.")
        parser.add_argument("--kind", choices=ModelVersion.Kind.values, default=ModelVersion.Kind.POLICY)
        parser.add_argument("--parent", help="Name of the version this one derives from.")
        parser.add_argument("--notes", default="")

    def handle(self, *args, **options):
        parent = None
        if options["parent"]:
            parent = ModelVersion.objects.filter(name=options["parent"]).first()
            if parent is None:
                raise CommandError(f"No model version named {options['parent']!r}.")
        try:
            version = services.model_version_register(
                name=options["name"],
                base_model=options["base_model"],
                adapter_path=options["adapter"],
                kind=options["kind"],
                parent=parent,
                notes=options["notes"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Registered {version.name} ({version.kind}): {version.base_model}"))
