from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from annotation import views as annotation_views
from annotation.api import views as annotation_api
from generation import views as generation_views
from generation.api import views as generation_api

api = [
    path("api/auth/token/", obtain_auth_token, name="api_token"),
    path("api/projects/", annotation_api.ProjectList.as_view(), name="api_projects"),
    path("api/projects/<slug:slug>/", annotation_api.ProjectDetail.as_view(), name="api_project"),
    path("api/projects/<slug:slug>/prompts/", annotation_api.PromptList.as_view(), name="api_prompts"),
    path("api/projects/<slug:slug>/prompts/import/", annotation_api.PromptImport.as_view(), name="api_prompts_import"),
    path("api/projects/<slug:slug>/prompts/<int:pk>/", annotation_api.PromptDetail.as_view(), name="api_prompt"),
    path("api/models/", generation_api.ModelVersionList.as_view(), name="api_models"),
    path("api/models/<slug:name>/", generation_api.ModelVersionDetail.as_view(), name="api_model"),
]

pages = [
    path("", annotation_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/new/", annotation_views.project_create, name="project_create"),
    path("projects/<slug:slug>/", annotation_views.project_detail, name="project_detail"),
    path("projects/<slug:slug>/import/", annotation_views.prompts_import, name="prompts_import"),
    path("projects/<slug:slug>/prompts/", annotation_views.prompt_list, name="prompt_list"),
    path("projects/<slug:slug>/prompts/<int:prompt_id>/", annotation_views.prompt_detail, name="prompt_detail"),
    path("models/", generation_views.model_list, name="model_list"),
    path("models/new/", generation_views.model_register, name="model_register"),
    path("admin/", admin.site.urls),
]

urlpatterns = api + pages
