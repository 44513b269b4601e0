"""The three roles. Each is a Django group holding one of Project's custom permissions; admins hold all three.

Views and API endpoints check permissions (``annotation.manage``, ``annotation.label``, ``annotation.explore``),
never group names, so a deployment can craft its own groups.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

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
