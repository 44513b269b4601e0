from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_roles(sender, **kwargs):
    from annotation.services import roles_ensure

    roles_ensure()


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"

    def ready(self):
        # Groups are rows that must exist after every migrate, like Django's own permissions.
        post_migrate.connect(_ensure_roles, sender=self, dispatch_uid="annotation.roles_ensure")
