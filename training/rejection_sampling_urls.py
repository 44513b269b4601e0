"""URLs of this feature, added to config/urls.py's api and pages lists."""

from django.urls import path

from training import rejection_sampling_views as views
from training.api import rejection_sampling as api_views

api = [
    path("api/rejection-sampling/", api_views.RejectionSamplingList.as_view(), name="api_rejection_sampling_jobs"),
    path("api/rejection-sampling/<int:pk>/", api_views.RejectionSamplingDetail.as_view(), name="api_rejection_sampling_job"),
    path("api/rejection-sampling/<int:pk>/cancel/", api_views.RejectionSamplingCancel.as_view(), name="api_rejection_sampling_cancel"),
    path("api/rejection-sampling/<int:pk>/samples/", api_views.RejectionSamplingSamples.as_view(), name="api_rejection_sampling_samples"),
    path("api/rejection-sampling/<int:pk>/train/", api_views.RejectionSamplingTrain.as_view(), name="api_rejection_sampling_train"),
]

pages = [
    path("projects/<slug:slug>/rejection-sampling/", views.rejection_sampling_list, name="rejection_sampling_list"),
    path("projects/<slug:slug>/rejection-sampling/new/", views.rejection_sampling_create, name="rejection_sampling_create"),
    path("rejection-sampling/<int:job_id>/", views.rejection_sampling_detail, name="rejection_sampling_detail"),
    path("rejection-sampling/<int:job_id>/cancel/", views.rejection_sampling_cancel, name="rejection_sampling_cancel"),
    path("rejection-sampling/<int:job_id>/train/", views.rejection_sampling_train, name="rejection_sampling_train"),
]
