"""Projects, membership, DAC reviews and the public register. Thin views: find the project the
user may see (404 otherwise), check who may act (403), validate (400), call one service."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from access.selectors import agreement_gaps_for
from environment.serializers import DictionaryOut
from tre.openapi import answers
from tre.roles import Role, has_role, user_roles

from . import policies, selectors, services
from .models import ProjectReview
from .serializers import MemberIn, ProjectIn, ProjectOut, RegisterOut, ReviewIn, ReviewOut, TransitionIn


def _project_out(request, pk, *, code=status.HTTP_200_OK) -> Response:
    project = selectors.project_get_for(user=request.user, pk=pk)
    return Response(ProjectOut(project, context={"gaps": agreement_gaps_for([project])}).data, status=code)


class ProjectListApi(mixins.ListModelMixin, generics.GenericAPIView):
    """``GET``: the projects you may see (yours; every non-draft one for DAC members).
    ``POST``: a new draft project; you become its lead."""

    serializer_class = ProjectOut

    def get_queryset(self):
        return selectors.project_list_for(user=self.request.user)

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        data = ProjectOut(page, many=True, context={"gaps": agreement_gaps_for(page)}).data
        return self.get_paginated_response(data)

    @extend_schema(responses=answers(ProjectOut(many=True), 401))
    def get(self, request):
        return self.list(request)

    @extend_schema(request=ProjectIn, responses=answers(ProjectOut, 400, 401, ok_code=201))
    def post(self, request):
        body = ProjectIn(data=request.data)
        body.is_valid(raise_exception=True)
        project = services.project_create(actor=request.user, data=body.validated_data, request=request)
        return _project_out(request, project.pk, code=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    @extend_schema(responses=answers(ProjectOut, 401, 404))
    def get(self, request, pk):
        return _project_out(request, pk)

    @extend_schema(request=ProjectIn, responses=answers(ProjectOut, 400, 401, 403, 404, 409))
    def patch(self, request, pk):
        project = selectors.project_get_for(user=request.user, pk=pk)
        policies.require_lead(request.user, project, "edit it")
        policies.require_status(project, policies.EDITABLE, "be edited")
        body = ProjectIn(data=request.data, partial=True, context={"project": project})
        body.is_valid(raise_exception=True)
        services.project_update(project=project, actor=request.user, data=body.validated_data, request=request)
        return _project_out(request, pk)


class ProjectMembersApi(APIView):
    @extend_schema(request=MemberIn, responses=answers(ProjectOut, 400, 401, 403, 404, 409, ok_code=201))
    def post(self, request, pk):
        project = selectors.project_get_for(user=request.user, pk=pk)
        policies.require_lead(request.user, project, "add members")
        body = MemberIn(data=request.data)
        body.is_valid(raise_exception=True)
        services.project_member_add(project=project, actor=request.user, request=request, **body.validated_data)
        return _project_out(request, pk, code=status.HTTP_201_CREATED)


class ProjectMemberApi(APIView):
    @extend_schema(request=None, responses={
        **answers(ProjectOut, 401, 403, 404, 409),
        204: OpenApiResponse(description="you removed yourself (left the project)")})
    def delete(self, request, pk, username):
        project = selectors.project_get_for(user=request.user, pk=pk)
        services.project_member_remove(project=project, actor=request.user, username=username, request=request)
        if request.user.get_username() == username:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _project_out(request, pk)


class ProjectSubmitApi(APIView):
    @extend_schema(request=None, responses=answers(ProjectOut, 400, 401, 403, 404, 409))
    def post(self, request, pk):
        project = selectors.project_get_for(user=request.user, pk=pk)
        services.project_submit(project=project, actor=request.user, request=request)
        return _project_out(request, pk)


class ProjectReviewsApi(mixins.ListModelMixin, generics.GenericAPIView):
    """``GET``: the project's DAC votes, all rounds (DAC members and the project's members; only
    DAC members see who voted). ``POST``: a vote (eligible DAC members; the project must be
    submitted)."""

    serializer_class = ReviewOut

    def _project(self):
        if not hasattr(self, "_the_project"):
            self._the_project = selectors.project_get_for(user=self.request.user, pk=self.kwargs["pk"])
        return self._the_project

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ProjectReview.objects.none()
        return selectors.review_list_for(user=self.request.user, project=self._project())

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "project": self._project(),
                "show_reviewers": has_role(self.request.user, Role.DAC)}

    @extend_schema(responses=answers(ReviewOut(many=True), 401, 404))
    def get(self, request, pk):
        return self.list(request)

    @extend_schema(request=ReviewIn, responses=answers(ProjectOut, 400, 401, 403, 404, 409))
    def post(self, request, pk):
        project = self._project()
        policies.require_eligible_dac(request.user, project)
        body = ReviewIn(data=request.data)
        body.is_valid(raise_exception=True)
        services.project_review(project=project, actor=request.user, request=request, **body.validated_data)
        return _project_out(request, pk)


class _TransitionApi(APIView):
    """``POST {comment?}`` → the project. ``check`` (403) runs before the body is read."""

    check = None
    service = None

    @extend_schema(request=TransitionIn, responses=answers(ProjectOut, 400, 401, 403, 404, 409))
    def post(self, request, pk):
        project = selectors.project_get_for(user=request.user, pk=pk)
        self.check(request.user, project)
        body = TransitionIn(data=request.data)
        body.is_valid(raise_exception=True)
        self.service(project=project, actor=request.user, request=request, **body.validated_data)
        return _project_out(request, pk)


class ProjectSuspendApi(_TransitionApi):
    """An eligible DAC member suspends an approved project (research permissions are removed)."""

    check = staticmethod(policies.require_eligible_dac)
    service = staticmethod(services.project_suspend)


class ProjectReinstateApi(_TransitionApi):
    """An eligible DAC member reinstates a suspended project (research permissions come back)."""

    check = staticmethod(policies.require_eligible_dac)
    service = staticmethod(services.project_reinstate)


def _may_close(user, project):
    policies.require_lead_or_eligible_dac(user, project, "close it")


class ProjectCloseApi(_TransitionApi):
    """The lead or an eligible DAC member closes an approved, suspended or expired project."""

    check = staticmethod(_may_close)
    service = staticmethod(services.project_close)


class RegisterApi(mixins.ListModelMixin, generics.GenericAPIView):
    """The public register: approved, suspended, closed and expired projects (no login)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    serializer_class = RegisterOut

    def get_queryset(self):
        params = self.request.query_params
        return selectors.register_list(organisation=params.get("organisation"), dataset=params.get("dataset"),
                                       commercial=params.get("commercial"))

    @extend_schema(
        parameters=[
            OpenApiParameter("organisation", str, description="organisation id or name"),
            OpenApiParameter("dataset", str, description="dataset id or name"),
            OpenApiParameter("commercial", bool, description="true or false"),
        ],
        responses=answers(RegisterOut(many=True), 400),
    )
    def get(self, request):
        return self.list(request)


# --- me: who am I, and in which projects ------------------------------------------------------

class MeOut(serializers.Serializer):
    username = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    organisation = serializers.IntegerField(allow_null=True)
    organisation_name = serializers.CharField(allow_null=True)
    projects = serializers.ListField(child=serializers.DictField())


class MeApi(APIView):
    @extend_schema(responses={200: MeOut, 401: None})
    def get(self, request):
        user = request.user
        org = getattr(getattr(user, "profile", None), "organisation", None)
        return Response({
            "username": user.get_username(),
            "roles": sorted(user_roles(user)),
            "organisation": org.pk if org else None,
            "organisation_name": org.name if org else None,
            "projects": selectors.member_projects(user),
        })


class DatasetDictionaryApi(APIView):
    """``GET datasets/{id}/dictionary/``: a dataset's data dictionary (DESIGN.md §4) — names,
    types, roles, domains, bounds, granularity, descriptions — for custodians and for members of a
    project approved for the dataset (404 for everyone else). Researchers do not see dropped
    columns. Served here because the rule is about projects; the dictionary is the environment's."""

    @extend_schema(responses=answers(DictionaryOut, 401, 404))
    def get(self, request, pk):
        dataset = selectors.dataset_dictionary_for(user=request.user, pk=pk)
        dictionary = dataset.dictionary_object()
        body = dictionary.to_json(public=not has_role(request.user, Role.CUSTODIAN))
        body["complete"] = dictionary.complete
        return Response(DictionaryOut(body).data)
