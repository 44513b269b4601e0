"""URLs of this feature, added to config/urls.py's api and pages lists."""

from django.urls import path  # noqa: F401

api = []

pages = []
