"""Authentication plumbing tuned for the labeling loop: permissions and API tokens are read from a short-lived
per-process cache instead of two or three queries on every request. Role and token changes take effect within
AUTH_CACHE_SECONDS (services that change roles clear the cache at once)."""

from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication

AUTH_CACHE_SECONDS = 30


def _permissions_key(user_id: int) -> str:
    return f"prefloop:permissions:{user_id}"


def forget_permissions(user_id: int) -> None:
    cache.delete(_permissions_key(user_id))


class CachedPermissionBackend(ModelBackend):
    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            key = _permissions_key(user_obj.pk)
            permissions = cache.get(key)
            if permissions is None:
                permissions = super().get_all_permissions(user_obj)
                cache.set(key, permissions, AUTH_CACHE_SECONDS)
            user_obj._perm_cache = permissions
        return user_obj._perm_cache


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        cache_key = f"prefloop:token:{key}"
        found = cache.get(cache_key)
        if found is None:
            found = super().authenticate_credentials(key)  # raises AuthenticationFailed for a bad or inactive one
            cache.set(cache_key, found, AUTH_CACHE_SECONDS)
        return found
