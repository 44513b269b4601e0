"""URLs of this feature, added to config/urls.py's api and pages lists."""

from django.urls import path

from annotation import demonstration_views as views
from annotation.api import demonstrations as api_views

api = [
    path("api/projects/<slug:slug>/demonstrations/", api_views.DemonstrationList.as_view(), name="api_demonstrations"),
    path("api/projects/<slug:slug>/demonstrations/next/", api_views.NextPromptToWrite.as_view(), name="api_demonstration_next"),
    path("api/rankings/<int:pk>/edit/", api_views.RankingEdit.as_view(), name="api_ranking_edit"),
    path("api/demonstrations/<int:pk>/", api_views.DemonstrationDetail.as_view(), name="api_demonstration"),
    path("api/demonstrations/<int:pk>/review/", api_views.DemonstrationReview.as_view(), name="api_demonstration_review"),
]

pages = [
    path("projects/<slug:slug>/write/", views.write, name="write"),
    path("projects/<slug:slug>/write/<int:prompt_id>/", views.write_submit, name="write_submit"),
    path("projects/<slug:slug>/write/<int:prompt_id>/skip/", views.write_skip, name="write_skip"),
    path("projects/<slug:slug>/label/rankings/<int:ranking_id>/edit/", views.label_edit, name="label_edit"),
    path("projects/<slug:slug>/label/rankings/<int:ranking_id>/skip-edit/", views.label_edit_skip, name="label_edit_skip"),
    path("projects/<slug:slug>/my-demonstrations/", views.my_demonstrations, name="my_demonstrations"),
    path("projects/<slug:slug>/demonstrations/", views.review_list, name="demonstration_review"),
    path("projects/<slug:slug>/demonstrations/<int:demonstration_id>/review/", views.review, name="demonstration_review_submit"),
]
