from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render

from annotation.roles import EXPLORE, MANAGE
from config.web import add_validation_errors, require
from generation import services
from generation.forms import ModelVersionForm
from generation.models import ModelVersion


@require(EXPLORE)
def model_list(request):
    versions = ModelVersion.objects.select_related("parent").order_by("-created_at")
    return render(request, "model_list.html", {"versions": versions})


@require(MANAGE)
def model_register(request):
    form = ModelVersionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            version = services.model_version_register(created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_validation_errors(form, exc)
        else:
            messages.success(request, f"Model {version.name} registered.")
            return redirect("model_list")
    return render(request, "model_form.html", {"form": form}, status=422 if form.errors else 200)
