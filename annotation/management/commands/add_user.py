from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation import services
from config.web import validation_message
from annotation.roles import ROLE_PERMISSIONS


class Command(BaseCommand):
    help = "Create a user in a role (admin, labeler, researcher), or reset an existing user's password and role."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=sorted(ROLE_PERMISSIONS))
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="Also allow the Django admin.")

    def handle(self, *args, **options):
        try:
            # Django's password validators (AUTH_PASSWORD_VALIDATORS), as the admin's password forms use them.
            validate_password(options["password"], get_user_model()(username=options["username"], email=options["email"]))
            user = services.user_create(
                username=options["username"],
                password=options["password"],
                role=options["role"],
                email=options["email"],
                is_staff=options["staff"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"{user.username} is a {options['role']}."))
