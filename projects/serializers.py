from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from organisations.models import Purpose
from organisations.serializers import PurposeField
from tre.openapi import NamedChoiceField, object_id

from .models import Project, ProjectReview

PROJECT_STATUSES = [*Project.Status.values, Project.EXPIRED]


class ProjectIn(serializers.Serializer):
    """A project's writable fields. ``partial=True`` for PATCH, with ``context={"project": p}``."""

    title = serializers.CharField(max_length=200)
    lay_summary = serializers.CharField(max_length=10_000, allow_blank=True, required=False)
    purpose = serializers.CharField(max_length=10_000, allow_blank=True, required=False)
    purpose_categories = serializers.ListField(child=PurposeField(), required=False,
                                               max_length=len(Purpose.values) * 2)
    public_benefit = serializers.CharField(max_length=10_000, allow_blank=True, required=False)
    legal_basis = serializers.CharField(max_length=2_000, allow_blank=True, required=False)
    commercial = serializers.BooleanField(required=False)
    datasets = serializers.ListField(child=object_id(), required=False, max_length=1000)
    start_date = serializers.DateField(required=False, allow_null=True)
    end_date = serializers.DateField(required=False, allow_null=True)
    ethics_reference = serializers.CharField(max_length=200, allow_blank=True, required=False)

    def validate_purpose_categories(self, value):
        return list(dict.fromkeys(value))

    def validate(self, attrs):
        project = self.context.get("project")
        start = attrs.get("start_date", project.start_date if project else None)
        end = attrs.get("end_date", project.end_date if project else None)
        if start is not None and end is not None and end < start:
            raise serializers.ValidationError({"end_date": ["end_date must not be before start_date"]})
        return attrs


class MemberIn(serializers.Serializer):
    username = serializers.CharField(max_length=150)


class ReviewIn(serializers.Serializer):
    decision = NamedChoiceField(enum_name="ProjectReviewDecisionEnum", choices=ProjectReview.Decision.choices)
    comment = serializers.CharField(max_length=10_000)


class TransitionIn(serializers.Serializer):
    """``{reason}`` for suspend, reinstate and close. Its absence is reported by the service (400,
    after the state check), so a transition that cannot happen answers 409 whatever the body.
    ``comment`` is the deprecated name of ``reason``, still accepted (older clients and tests)."""

    reason = serializers.CharField(max_length=10_000, allow_blank=True, required=False, default="")
    comment = serializers.CharField(max_length=10_000, allow_blank=True, required=False, default="",
                                    help_text="deprecated: use reason")

    def validate(self, attrs):
        return {"reason": attrs.get("reason", "").strip() or attrs.pop("comment", "")}


class MemberOut(serializers.Serializer):
    username = serializers.CharField()
    role = NamedChoiceField(enum_name="ProjectRoleEnum", choices=["lead", "member"])


class GapOut(serializers.Serializer):
    dataset = serializers.IntegerField()
    dataset_name = serializers.CharField()
    reason = NamedChoiceField(enum_name="AgreementGapReasonEnum",
                              choices=["no_active_agreement", "commercial_use_not_allowed", "prohibited_use"])


class ProjectOut(serializers.ModelSerializer):
    """A project as its members and the DAC see it. Needs the relations of
    ``projects.selectors.project_get_for`` and ``context["gaps"]`` ({project id: gaps})."""

    status = serializers.SerializerMethodField()
    organisation_name = serializers.SerializerMethodField()
    lead = serializers.SerializerMethodField()
    datasets = serializers.SerializerMethodField()
    dataset_names = serializers.SerializerMethodField()
    members = serializers.SerializerMethodField()
    agreement_gaps = serializers.SerializerMethodField()
    purpose_categories = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Project
        fields = ["id", "title", "lay_summary", "purpose", "purpose_categories", "public_benefit", "legal_basis",
                  "commercial", "datasets", "dataset_names", "start_date", "end_date", "ethics_reference", "status",
                  "organisation", "organisation_name", "lead", "members", "agreement_gaps", "review_round",
                  "created_at", "updated_at", "submitted_at", "approved_at", "rejected_at", "suspended_at",
                  "closed_at", "expired_at"]

    @extend_schema_field(NamedChoiceField(enum_name="ProjectStatusEnum", choices=PROJECT_STATUSES))
    def get_status(self, obj):
        return obj.effective_status()

    def get_organisation_name(self, obj) -> str | None:
        return obj.organisation.name if obj.organisation_id else None

    def get_lead(self, obj) -> str:
        return obj.lead.get_username()

    def get_datasets(self, obj) -> list[int]:
        return sorted(d.pk for d in obj.datasets.all())

    def get_dataset_names(self, obj) -> list[str]:
        return sorted(d.name for d in obj.datasets.all())

    @extend_schema_field(MemberOut(many=True))
    def get_members(self, obj):
        return [{"username": m.user.get_username(), "role": m.role} for m in obj.memberships.all()]

    @extend_schema_field(GapOut(many=True))
    def get_agreement_gaps(self, obj):
        return self.context["gaps"][obj.pk]


class ReviewOut(serializers.ModelSerializer):
    """A DAC vote. ``reviewer`` is shown to DAC members only (null for the project's members);
    ``current`` is false for votes of an earlier round (cleared by a return)."""

    reviewer = serializers.SerializerMethodField()
    current = serializers.SerializerMethodField()

    class Meta:
        model = ProjectReview
        fields = ["id", "decision", "comment", "round", "current", "reviewer", "created_at"]

    def get_reviewer(self, obj) -> str | None:
        return obj.reviewer.get_username() if self.context.get("show_reviewers") else None

    def get_current(self, obj) -> bool:
        return obj.round == self.context["project"].review_round


class RegisterOut(serializers.Serializer):
    """One entry of the public register: exactly these fields."""

    id = serializers.IntegerField()
    title = serializers.CharField()
    lay_summary = serializers.CharField()
    organisation = serializers.SerializerMethodField()
    sector = serializers.SerializerMethodField()
    purpose = serializers.CharField()
    public_benefit = serializers.CharField()
    legal_basis = serializers.CharField()
    commercial = serializers.BooleanField()
    datasets = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    approved_at = serializers.DateTimeField()
    start_date = serializers.DateField()
    end_date = serializers.DateField()
    opt_outs_applied = serializers.SerializerMethodField()
    outputs_released = serializers.IntegerField()

    def get_organisation(self, obj) -> str | None:
        return obj.organisation.name if obj.organisation_id else None

    def get_sector(self, obj) -> str | None:
        return obj.organisation.sector if obj.organisation_id else None

    def get_datasets(self, obj) -> list[str]:
        return sorted(d.name for d in obj.datasets.all())

    def get_opt_outs_applied(self, obj) -> bool:
        # Every query of every project excludes registered opt-outs from the moment they are
        # registered (DESIGN §4); there is no way to run without them (docs/DESIGN.md, Additions).
        return True

    @extend_schema_field(NamedChoiceField(enum_name="RegisterStatusEnum",
                                          choices=["approved", "suspended", "closed", "expired"]))
    def get_status(self, obj):
        return obj.effective_status()


class ReleasedOutputOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    released_at = serializers.DateTimeField()


class RegisterDetailOut(RegisterOut):
    """A register entry and its released outputs (title and date), oldest first."""

    released_outputs = ReleasedOutputOut(many=True)
