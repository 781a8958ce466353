from django.urls import path

from . import api

urlpatterns = [
    path("projects/", api.ProjectListApi.as_view(), name="projects"),
    path("projects/<int:pk>/", api.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<int:pk>/members/", api.ProjectMembersApi.as_view(), name="project-members"),
    path("projects/<int:pk>/members/<str:username>/", api.ProjectMemberApi.as_view(), name="project-member"),
    path("projects/<int:pk>/submit/", api.ProjectSubmitApi.as_view(), name="project-submit"),
    path("projects/<int:pk>/reviews/", api.ProjectReviewsApi.as_view(), name="project-reviews"),
    path("projects/<int:pk>/suspend/", api.ProjectSuspendApi.as_view(), name="project-suspend"),
    path("projects/<int:pk>/reinstate/", api.ProjectReinstateApi.as_view(), name="project-reinstate"),
    path("projects/<int:pk>/close/", api.ProjectCloseApi.as_view(), name="project-close"),
    path("register/", api.RegisterApi.as_view(), name="register"),
    path("datasets/<int:pk>/dictionary/", api.DatasetDictionaryApi.as_view(), name="dataset-dictionary"),
]
