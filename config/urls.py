from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotation import demonstration_urls, export_views, job_views, labeling_views
from annotation import views as annotation_views
from annotation.api import data as data_api
from annotation.api.auth import ObtainToken
from annotation.api import exports as exports_api
from annotation.api import imports as imports_api
from annotation.api import jobs as jobs_api
from annotation.api import labeling as labeling_api
from annotation.api import views as annotation_api
from generation import views as generation_views
from generation.api import views as generation_api
from training import evaluation_views, rejection_sampling_urls
from training import views as training_views
from training.api import evaluations as evaluations_api
from training.api import views as training_api

api = [
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    path("api/auth/token/", ObtainToken.as_view(), name="api_token"),
    path("api/projects/", annotation_api.ProjectList.as_view(), name="api_projects"),
    path("api/projects/<slug:slug>/", annotation_api.ProjectDetail.as_view(), name="api_project"),
    path("api/projects/<slug:slug>/demonstration-mode/", annotation_api.DemonstrationMode.as_view(), name="api_demonstration_mode"),
    path("api/projects/<slug:slug>/prompts/", annotation_api.PromptList.as_view(), name="api_prompts"),
    path("api/projects/<slug:slug>/prompts/import/", annotation_api.PromptImport.as_view(), name="api_prompts_import"),
    path("api/imports/<int:pk>/", imports_api.ImportJobDetail.as_view(), name="api_import"),
    path("api/imports/<int:pk>/cancel/", imports_api.ImportJobCancel.as_view(), name="api_import_cancel"),
    path("api/projects/<slug:slug>/prompts/<int:pk>/", annotation_api.PromptDetail.as_view(), name="api_prompt"),
    path("api/projects/<slug:slug>/items/", data_api.ItemList.as_view(), name="api_items"),
    path("api/projects/<slug:slug>/items/<int:pk>/", data_api.ItemDetail.as_view(), name="api_item"),
    path("api/projects/<slug:slug>/pairs/", data_api.PairList.as_view(), name="api_pairs"),
    path("api/projects/<slug:slug>/next/", labeling_api.NextItem.as_view(), name="api_next_item"),
    path("api/projects/<slug:slug>/progress/", labeling_api.ProjectProgress.as_view(), name="api_progress"),
    path("api/projects/<slug:slug>/agreement/", labeling_api.ProjectAgreement.as_view(), name="api_agreement"),
    path("api/projects/<slug:slug>/flags/", labeling_api.FlagList.as_view(), name="api_flags"),
    path("api/items/<int:item_id>/ranking/", labeling_api.RankItem.as_view(), name="api_rank"),
    path("api/items/<int:item_id>/skip/", labeling_api.SkipItem.as_view(), name="api_skip"),
    path("api/items/<int:item_id>/flag/", labeling_api.FlagItem.as_view(), name="api_flag"),
    path("api/rankings/", labeling_api.RankingList.as_view(), name="api_rankings"),
    path("api/rankings/<int:pk>/", labeling_api.RankingDetail.as_view(), name="api_ranking"),
    path("api/flags/<int:pk>/dismiss/", labeling_api.FlagReview.as_view(decision="dismiss"), name="api_flag_dismiss"),
    path("api/flags/<int:pk>/retire/", labeling_api.FlagReview.as_view(decision="retire"), name="api_flag_retire"),
    path("api/exports/", exports_api.ExportList.as_view(), name="api_exports"),
    path("api/exports/<int:pk>/", exports_api.ExportDetail.as_view(), name="api_export"),
    path("api/exports/<int:pk>/data/", exports_api.ExportDownload.as_view(part="data"), name="api_export_data"),
    path("api/exports/<int:pk>/card/", exports_api.ExportDownload.as_view(part="card"), name="api_export_card"),
    path("api/jobs/", jobs_api.JobList.as_view(), name="api_jobs"),
    path("api/generation-jobs/", generation_api.GenerationJobList.as_view(), name="api_generation_jobs"),
    path("api/generation-jobs/<int:pk>/", generation_api.GenerationJobDetail.as_view(), name="api_generation_job"),
    path("api/generation-jobs/<int:pk>/cancel/", generation_api.GenerationJobCancel.as_view(), name="api_generation_job_cancel"),
    path("api/models/", generation_api.ModelVersionList.as_view(), name="api_models"),
    path("api/models/<slug:name>/", generation_api.ModelVersionDetail.as_view(), name="api_model"),
    path("api/training-runs/", training_api.TrainingRunList.as_view(), name="api_training_runs"),
    path("api/training-runs/check/", training_api.TrainingRunCheck.as_view(), name="api_training_run_check"),
    path("api/training-runs/<int:pk>/", training_api.TrainingRunDetail.as_view(), name="api_training_run"),
    path("api/training-runs/<int:pk>/cancel/", training_api.TrainingRunCancel.as_view(), name="api_training_run_cancel"),
    path("api/training-runs/<int:pk>/metrics/", training_api.TrainingRunMetrics.as_view(), name="api_training_run_metrics"),
    path("api/training-runs/<int:pk>/samples/", training_api.TrainingRunSamples.as_view(), name="api_training_run_samples"),
    path("api/scoring-jobs/", training_api.ScoringJobList.as_view(), name="api_scoring_jobs"),
    path("api/scoring-jobs/<int:pk>/", training_api.ScoringJobDetail.as_view(), name="api_scoring_job"),
    path("api/scoring-jobs/<int:pk>/cancel/", training_api.ScoringJobCancel.as_view(), name="api_scoring_job_cancel"),
    path("api/projects/<slug:slug>/queue-order/", training_api.QueueOrder.as_view(), name="api_queue_order"),
    path("api/projects/<slug:slug>/reward-accuracy/", training_api.RewardAccuracy.as_view(), name="api_reward_accuracy"),
    path("api/projects/<slug:slug>/leaderboard/", evaluations_api.Leaderboard.as_view(), name="api_leaderboard"),
    path("api/evaluations/", evaluations_api.EvaluationList.as_view(), name="api_evaluations"),
    path("api/evaluations/<int:pk>/", evaluations_api.EvaluationDetail.as_view(), name="api_evaluation"),
    path("api/evaluations/<int:pk>/cancel/", evaluations_api.EvaluationCancel.as_view(), name="api_evaluation_cancel"),
    path("api/evaluations/<int:pk>/send/", evaluations_api.EvaluationSend.as_view(), name="api_evaluation_send"),
    *demonstration_urls.api,
    *rejection_sampling_urls.api,
]

pages = [
    path("", annotation_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/new/", annotation_views.project_create, name="project_create"),
    path("projects/<slug:slug>/", annotation_views.project_detail, name="project_detail"),
    path("projects/<slug:slug>/import/", annotation_views.prompts_import, name="prompts_import"),
    path("projects/<slug:slug>/demonstration-mode/", annotation_views.demonstration_mode_set, name="demonstration_mode_set"),
    path("projects/<slug:slug>/prompts/", annotation_views.prompt_list, name="prompt_list"),
    path("projects/<slug:slug>/prompts/<int:prompt_id>/", annotation_views.prompt_detail, name="prompt_detail"),
    path("projects/<slug:slug>/label/", labeling_views.label, name="label"),
    path("projects/<slug:slug>/label/<int:item_id>/rank/", labeling_views.label_rank, name="label_rank"),
    path("projects/<slug:slug>/label/<int:item_id>/skip/", labeling_views.label_skip, name="label_skip"),
    path("projects/<slug:slug>/label/<int:item_id>/flag/", labeling_views.label_flag, name="label_flag"),
    path("projects/<slug:slug>/my-rankings/", labeling_views.my_rankings, name="my_rankings"),
    path("projects/<slug:slug>/my-rankings/<int:ranking_id>/", labeling_views.ranking_revise, name="ranking_revise"),
    path("projects/<slug:slug>/dashboard/", labeling_views.dashboard, name="dashboard"),
    path("projects/<slug:slug>/flags/<int:flag_id>/dismiss/", labeling_views.flag_review, {"decision": "dismiss"}, name="flag_dismiss"),
    path("projects/<slug:slug>/flags/<int:flag_id>/retire/", labeling_views.flag_review, {"decision": "retire"}, name="flag_retire"),
    path("projects/<slug:slug>/export/", export_views.export_create, name="export_create"),
    path("projects/<slug:slug>/export/sft/", export_views.sft_export_create, name="sft_export_create"),
    path("exports/<int:export_id>/", export_views.export_detail, name="export_detail"),
    path("jobs/import/<int:import_id>/", annotation_views.import_detail, name="import_detail"),
    path("jobs/import/<int:import_id>/cancel/", annotation_views.import_cancel, name="import_cancel"),
    path("exports/<int:export_id>/data/", export_views.export_download, {"part": "data"}, name="export_data"),
    path("exports/<int:export_id>/card/", export_views.export_download, {"part": "card"}, name="export_card"),
    path("projects/<slug:slug>/generate/", generation_views.job_create, name="job_create"),
    path("jobs/", job_views.job_list, name="jobs"),
    path("jobs/generation/", generation_views.job_list, name="job_list"),
    path("jobs/generation/<int:job_id>/", generation_views.job_detail, name="job_detail"),
    path("jobs/generation/<int:job_id>/cancel/", generation_views.job_cancel, name="job_cancel"),
    path("training/", training_views.run_list, name="run_list"),
    path("training/new/", training_views.run_create, name="run_create"),
    path("training/new/check/", training_views.run_check, name="run_check"),
    path("training/compare/", training_views.run_compare, name="run_compare"),
    path("training/<int:run_id>/", training_views.run_detail, name="run_detail"),
    path("training/<int:run_id>/cancel/", training_views.run_cancel, name="run_cancel"),
    path("projects/<slug:slug>/reward/", training_views.reward_overview, name="reward_overview"),
    path("projects/<slug:slug>/reward/score/", training_views.scoring_create, name="scoring_create"),
    path("projects/<slug:slug>/reward/queue-order/", training_views.queue_order_set, name="queue_order_set"),
    path("scoring/<int:job_id>/", training_views.scoring_detail, name="scoring_detail"),
    path("scoring/<int:job_id>/cancel/", training_views.scoring_cancel, name="scoring_cancel"),
    path("projects/<slug:slug>/evaluations/", evaluation_views.evaluation_list, name="evaluation_list"),
    path("projects/<slug:slug>/evaluations/new/", evaluation_views.evaluation_create, name="evaluation_create"),
    path("projects/<slug:slug>/leaderboard/", evaluation_views.leaderboard, name="leaderboard"),
    path("projects/<slug:slug>/rounds/", evaluation_views.project_rounds, name="project_rounds"),
    path("evaluations/<int:evaluation_id>/", evaluation_views.evaluation_detail, name="evaluation_detail"),
    path("evaluations/<int:evaluation_id>/cancel/", evaluation_views.evaluation_cancel, name="evaluation_cancel"),
    path("evaluations/<int:evaluation_id>/send/", evaluation_views.evaluation_send, name="evaluation_send"),
    path("models/", generation_views.model_list, name="model_list"),
    path("models/new/", generation_views.model_register, name="model_register"),
    *demonstration_urls.pages,
    *rejection_sampling_urls.pages,
    path("admin/", admin.site.urls),
]

urlpatterns = api + pages

handler404 = "config.web.page_not_found"
