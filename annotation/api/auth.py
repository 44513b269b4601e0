"""The API token endpoint, with django-axes' lockout answered as what it is (429), not as wrong credentials."""

from django.conf import settings
from rest_framework import status
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response


class ObtainToken(ObtainAuthToken):
    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # AxesStandaloneBackend marks the request it refused; DRF's serializer only sees "no user".
            if getattr(request, "axes_locked_out", False):
                return Response({"detail": locked_out_message()}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            raise


def locked_out_message() -> str:
    minutes = settings.AXES_COOLOFF_TIME.total_seconds() / 60
    return (
        f"Too many failed logins for this username from this address; try again in {minutes:g} minutes "
        "(or ask an admin to run `manage.py axes_reset_username`)."
    )
