"""Inputs, and the two views of an output (DESIGN.md §8, docs/outputs.md).

The views are built by functions (``member_view``, ``checker_view``, ``list_item``) so that what a
role sees is written down in one place; the ``*Out`` serializers describe them for the schema.
"""

from rest_framework import serializers

from tre.openapi import NamedChoiceField

from .disclosure import CONTRIBUTORS, RULES
from .exports import FORMATS
from .models import Output, OutputReview

_datetime = serializers.DateTimeField()


def _dt(value):
    return None if value is None else _datetime.to_representation(value)


# --- inputs ------------------------------------------------------------------------------------

class OutputReviewIn(serializers.Serializer):
    decision = serializers.ChoiceField(choices=OutputReview.Decision.choices)
    comment = serializers.CharField(max_length=10_000)


class OutputTransitionIn(serializers.Serializer):
    comment = serializers.CharField(max_length=10_000, allow_blank=True, required=False, default="")


class DownloadParams(serializers.Serializer):
    file_format = serializers.ChoiceField(choices=FORMATS, required=False, default="csv")


class ListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=Output.Status.choices, required=False)


# --- views -------------------------------------------------------------------------------------

def _sdc(output) -> dict:
    return {"status": output.sdc_status, "summary": dict(output.sdc_summary), "settings": dict(output.sdc_params)}


def _common(output, view: str) -> dict:
    """What every view holds: no value, no disclosure-control outcome (DESIGN §6)."""
    return {
        "id": output.pk,
        "query": output.query_id,
        "project": output.project_id,
        "project_title": output.project.title,
        "status": output.status,
        "columns": list(output.columns),
        "round": output.round,
        "created_at": _dt(output.created_at),
        "requested_at": _dt(output.requested_at),
        "released_at": _dt(output.released_at),
        "view": view,
    }


def list_item(output, *, checker: bool) -> dict:
    """One row of ``GET /outputs/``: no values at all, whoever asks; checkers also see ``sdc``."""
    data = _common(output, "checker" if checker else "member")
    if checker:
        data["sdc"] = _sdc(output)
    return data


def member_view(output, *, reviews) -> dict:
    """What the project's members see: the status and column names, never a value or a
    disclosure-control outcome before release; once released, the released table (``safe``: the
    full grid sorted by key, withheld cells null, no contributors). Votes of finished rounds with
    their comments, without who cast them."""
    data = _common(output, "member")
    data["request_comment"] = output.request_comment
    data["reviews"] = [{"decision": r.decision, "comment": r.comment, "round": r.round,
                        "created_at": _dt(r.created_at)} for r in reviews]
    if output.status == Output.Status.RELEASED:
        data["safe"] = [list(row) for row in output.safe]
    return data


def checker_view(output, *, reviews) -> dict:
    """What an eligible checker sees: ``columns`` with ``contributors``, the exact ``raw`` grid, the
    ``safe`` grid as released, per-cell ``flags``, ``sdc`` {status, summary, settings}, the
    differencing findings, the SQL and the engine's statement, timings, any engine error and the
    votes they may see."""
    data = _common(output, "checker")
    query = output.query
    data.update({
        "columns": [*output.columns, CONTRIBUTORS],
        "raw": output.raw,
        "safe": output.safe,
        "flags": output.flags,
        "sdc": _sdc(output),
        "sql": query.sql,
        "contributions_sql": query.contributions_sql,
        "timings": dict(query.timings),
        "engine_error": query.error_detail,
        "populated_cells": query.result_groups,
        "differencing": output.differencing,
        "request_comment": output.request_comment,
        "reviews": [{"checker": r.checker.get_username(), "decision": r.decision, "comment": r.comment,
                     "round": r.round, "created_at": _dt(r.created_at)} for r in reviews],
    })
    return data


# --- schema ------------------------------------------------------------------------------------

class SdcOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=Output.SdcStatus.choices)
    summary = serializers.DictField(child=serializers.IntegerField(), help_text=f"cells per rule: {', '.join(RULES)}")
    settings = serializers.DictField(help_text="the disclosure-control parameters in force")


class OutputListOut(serializers.Serializer):
    id = serializers.IntegerField()
    query = serializers.IntegerField()
    project = serializers.IntegerField()
    project_title = serializers.CharField()
    # A plain string in the schema: a choice field named "status" in several components collides
    # with the other apps' status enums (drf-spectacular W001).
    status = serializers.CharField(help_text=f"one of {', '.join(Output.Status.values)}")
    sdc = SdcOut(required=False, help_text="checkers only")
    columns = serializers.ListField(child=serializers.CharField(), help_text="the result's columns")
    round = serializers.IntegerField(help_text="rounds of checking so far (0: release never requested)")
    created_at = serializers.DateTimeField()
    requested_at = serializers.DateTimeField(allow_null=True)
    released_at = serializers.DateTimeField(allow_null=True)
    view = serializers.ChoiceField(choices=["member", "checker"])


class MemberReviewOut(serializers.Serializer):
    decision = serializers.ChoiceField(choices=OutputReview.Decision.choices)
    comment = serializers.CharField()
    round = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class CheckerReviewOut(MemberReviewOut):
    checker = serializers.CharField()


def _table(**kwargs):
    return serializers.ListField(child=serializers.ListField(child=serializers.JSONField(allow_null=True)), **kwargs)


class OutputMemberOut(OutputListOut):
    """The member view (``view: member``)."""

    # one value each, so a response matches exactly one branch of the detail schema's oneOf
    view = NamedChoiceField(enum_name="MemberViewEnum", choices=["member"])

    request_comment = serializers.CharField()
    reviews = MemberReviewOut(many=True, help_text="votes of finished rounds")
    safe = _table(required=False, help_text="released outputs only: the full grid sorted by key, null where withheld")


class OutputCheckerOut(OutputListOut):
    """The checker view (``view: checker``)."""

    view = NamedChoiceField(enum_name="CheckerViewEnum", choices=["checker"])

    columns = serializers.ListField(child=serializers.CharField(), help_text=f"the result's columns plus {CONTRIBUTORS}")
    raw = _table(help_text="the full grid, exact, with the contributors column")
    safe = _table(help_text="the full grid as released: null where withheld")
    flags = serializers.ListField(child=serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
                                  help_text="per row: {statistic: [rules that fired]}")
    sdc = SdcOut()
    sql = serializers.CharField()
    contributions_sql = serializers.CharField()
    timings = serializers.DictField()
    engine_error = serializers.CharField()
    populated_cells = serializers.IntegerField(allow_null=True)
    differencing = serializers.ListField(child=serializers.DictField())
    request_comment = serializers.CharField()
    reviews = CheckerReviewOut(many=True)
