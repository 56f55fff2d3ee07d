"""The API is read-only and open; anything else needs an authenticated staff user."""
from rest_framework import permissions


class ReadOnlyOrStaff(permissions.BasePermission):
    """GET/HEAD/OPTIONS for everyone; any other method only for an authenticated staff user."""

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)
