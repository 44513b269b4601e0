"""How large a request body may be: small for JSON bodies and forms, large only for the views that take uploads.

Checked against Content-Length before any middleware or view reads the body (a request without one has no body
under WSGI), so an oversized request costs a 413 and nothing else."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse


def accepts_uploads(view):
    """Mark a function view (or an API view class) as taking file uploads: its body may be up to
    PREFLOOP_MAX_UPLOAD_BYTES instead of PREFLOOP_MAX_BODY_BYTES."""
    view.accepts_uploads = True
    return view


class RequestBodyLimit:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        limit = settings.PREFLOOP_MAX_UPLOAD_BYTES if _takes_uploads(view_func) else settings.PREFLOOP_MAX_BODY_BYTES
        if _content_length(request) <= limit:
            return None
        message = f"The request body is larger than this endpoint accepts ({size_text(limit)})."
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message}, status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


def _takes_uploads(view_func) -> bool:
    view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
    return bool(getattr(view_func, "accepts_uploads", False) or getattr(view_class, "accepts_uploads", False))


def _content_length(request) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def size_text(limit: int) -> str:
    """A byte limit as a person reads it in an error: "1 MB", "4096 MB", or "512 bytes" below a megabyte."""
    return f"{limit / 1024**2:g} MB" if limit >= 1024**2 else f"{limit:,} bytes"
