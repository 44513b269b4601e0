"""Roles and every check of them, in one place: the three roles, the permission backend, the page decorator and
the API permission classes.

Each role is a Django group holding one of Project's custom permissions; admins hold all three. Views and API
endpoints check permissions (``annotation.manage``, ``annotation.label``, ``annotation.explore``), never group
names, so a deployment can craft its own groups.

Nothing about a user's access is kept between requests: a removed role, a deactivated user or a deleted token stops
working on the very next request, in every web process. (A per-process cache did save a query per request, but no
process could tell the others to forget; bench/labeling_loop.py measured the loop without it, see the README.)
"""

from functools import wraps

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Permission
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from rest_framework import permissions

ADMIN, LABELER, RESEARCHER = "admin", "labeler", "researcher"
ROLE_PERMISSIONS = {
    ADMIN: ["manage", "label", "explore"],
    LABELER: ["label"],
    RESEARCHER: ["explore"],
}
MANAGE, LABEL, EXPLORE = "annotation.manage", "annotation.label", "annotation.explore"
ANY_ROLE = (MANAGE, LABEL, EXPLORE)

User = AbstractBaseUser | AnonymousUser


def can_manage(user: User) -> bool:
    return user.has_perm(MANAGE)


def can_label(user: User) -> bool:
    return user.has_perm(LABEL)


def can_explore(user: User) -> bool:
    """Read everything (prompts, candidates with their models, pairs) and export: researchers and admins."""
    return user.has_perm(EXPLORE)


def role_names(user: User) -> list[str]:
    if not user.is_authenticated:
        return []
    if user.is_superuser:
        return [ADMIN]
    return sorted(user.groups.values_list("name", flat=True))


class PermissionBackend(ModelBackend):
    """Django's ModelBackend with a user's permissions read in one query (direct and through groups) instead of two,
    once per request: the user object lives for one request, and so does what it remembers."""

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            granted = Permission.objects.all()
            if not user_obj.is_superuser:
                granted = granted.filter(Q(user=user_obj) | Q(group__user=user_obj))
            rows = granted.values_list("content_type__app_label", "codename").distinct()
            user_obj._perm_cache = {f"{app_label}.{codename}" for app_label, codename in rows}
        return user_obj._perm_cache


def require(*perms: str):
    """For pages: let through users holding any of ``perms``. Anonymous users go to the login page, others get a 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not any(request.user.has_perm(perm) for perm in perms):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


# --- the API's permission classes ------------------------------------------------------------------------------------


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
