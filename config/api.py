"""API plumbing shared by every app: role permissions and JSON errors."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, permissions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotation.labeling import LabelingError
from annotation.roles import ANY_ROLE, EXPLORE, LABEL, MANAGE


class _Holds(permissions.BasePermission):
    """Grants access to users holding any of ``perms`` (reads) or ``write_perms`` (unsafe methods)."""

    perms: tuple[str, ...] = ()
    write_perms: tuple[str, ...] | None = None

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        needed = self.perms
        if request.method not in permissions.SAFE_METHODS and self.write_perms is not None:
            needed = self.write_perms
        return any(request.user.has_perm(perm) for perm in needed)


class IsAdmin(_Holds):
    perms = (MANAGE,)


class IsLabeler(_Holds):
    perms = (LABEL,)


class CanExplore(_Holds):
    """Researchers and admins read; only admins write."""

    perms = (EXPLORE,)
    write_perms = (MANAGE,)


class IsExplorer(_Holds):
    """Researchers and admins, for reading and writing (requesting an export changes no data)."""

    perms = (EXPLORE,)


class AnyRoleReadsAdminWrites(_Holds):
    perms = ANY_ROLE
    write_perms = (MANAGE,)


def exception_handler(exc, context):
    """DRF's handler, plus the services' refusals: ValidationErrors become 400s, LabelingErrors their own status."""
    if isinstance(exc, LabelingError):
        return Response({"detail": str(exc)}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": " ".join(exc.messages)}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    return drf_exception_handler(exc, context)
