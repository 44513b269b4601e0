"""Helpers shared by the views and commands of every app (the role checks are in annotation.roles)."""

from django.core.exceptions import ValidationError


class Refusal(Exception):
    """A service refusing an action for a reason the user can act on; pages show the message, the API answers it
    with ``status_code``."""

    status_code = 409


def add_validation_errors(form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form, beside the field it names where there is one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def validation_message(exc: ValidationError) -> str:
    """One line for a ValidationError, naming the fields, for the command line and plain-text errors."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


def page_not_found(request, exception):
    """API clients get JSON for a path that matches no route (e.g. /api/exports/-1/); people get the 404 page."""
    if request.path.startswith("/api/"):
        from django.http import JsonResponse

        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found as html_page_not_found

    return html_page_not_found(request, exception)
