"""Read-only admin of projects, memberships and reviews (see tre/admin.py for who may read)."""

from typing import ClassVar

from django.contrib import admin

from tre.admin import GovernanceAdmin, may_read_governance

from .models import Project, ProjectMembership, ProjectReview


class MembershipInline(admin.TabularInline):
    model = ProjectMembership
    fields: ClassVar[tuple[str, ...]] = ("user", "role", "added_at", "added_by")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return may_read_governance(request.user)


class ReviewInline(MembershipInline):
    model = ProjectReview  # type: ignore[assignment]  # the same read-only inline, over the reviews
    fields: ClassVar[tuple[str, ...]] = ("reviewer", "decision", "comment", "round", "created_at")
    readonly_fields = fields


@admin.register(Project)
class ProjectAdmin(GovernanceAdmin):
    list_display = ["title", "organisation", "lead", "status", "commercial", "start_date", "end_date", "approved_at"]
    list_filter = ["status", "commercial"]
    list_select_related = ["organisation", "lead"]
    search_fields = ["title", "organisation__name", "lead__username"]
    inlines = [MembershipInline, ReviewInline]
