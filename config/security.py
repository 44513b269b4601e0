"""The Content-Security-Policy header on every response (Django 5.2 has no built-in one). Our pages pass it: scripts
are files under static/ (htmx from django-htmx, ours), styles are stylesheets, htmx runs without eval. Swagger UI and
Django's admin set inline styles from their own scripts, so their pages also allow inline styles (never scripts)."""

from django.conf import settings

INLINE_STYLE_PATHS = ("/api/docs/", "/admin/")


class ContentSecurityPolicy:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if request.path.startswith(INLINE_STYLE_PATHS):
            policy = policy.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
        response.headers.setdefault("Content-Security-Policy", policy)
        return response
