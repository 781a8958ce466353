"""Inputs, and the two views of an output (DESIGN.md §8, docs/outputs.md).

The views are built by functions (``member_view``, ``checker_view``, ``list_item``) so that what a
role sees is written down in one place; the ``*Out`` serializers describe them for the schema.
"""

from rest_framework import serializers

from tre.openapi import NamedChoiceField

from .exports import FORMATS
from .models import Output, OutputReview
from .sdc import N_PERSONS, RULES

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
    return {"status": output.sdc_status, "summary": dict(output.sdc_summary)}


def _common(output, view: str) -> dict:
    return {
        "id": output.pk,
        "query": output.query_id,
        "project": output.project_id,
        "project_title": output.project.title,
        "status": output.status,
        "sdc": _sdc(output),
        "columns": list(output.columns),
        "round": output.round,
        "created_at": _dt(output.created_at),
        "requested_at": _dt(output.requested_at),
        "released_at": _dt(output.released_at),
        "view": view,
    }


def list_item(output, *, checker: bool) -> dict:
    """One row of ``GET /outputs/``: no values at all, whoever asks."""
    return _common(output, "checker" if checker else "member")


def member_view(output, *, reviews) -> dict:
    """What the project's members see: the SDC status and per-rule counts, never a value before
    release; once released, also the released table (``safe`` without ``n_persons``). Votes of
    finished rounds with their comments, without who cast them."""
    data = _common(output, "member")
    data["request_comment"] = output.request_comment
    data["reviews"] = [{"decision": r.decision, "comment": r.comment, "round": r.round,
                        "created_at": _dt(r.created_at)} for r in reviews]
    if output.status == Output.Status.RELEASED:
        width = len(output.columns)
        data["safe"] = [row[:width] for row in output.safe]
    return data


def checker_view(output, *, raw_columns, raw, reviews) -> dict:
    """What an eligible checker sees: the raw and the safe table (both with ``n_persons``), per-cell
    flags, the rewritten SQL, the differencing findings and the votes they may see."""
    data = _common(output, "checker")
    data.update({
        "columns": list(raw_columns),
        "raw": raw,
        "safe": output.safe,
        "flags": output.flags,
        "sql": output.query.sql,
        "rewritten_sql": output.query.rewritten_sql,
        "differencing": output.differencing,
        "sdc_rules": dict(output.sdc_params),
        "request_comment": output.request_comment,
        "reviews": [{"checker": r.checker.get_username(), "decision": r.decision, "comment": r.comment,
                     "round": r.round, "created_at": _dt(r.created_at)} for r in reviews],
    })
    return data


# --- schema ------------------------------------------------------------------------------------

class SdcOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=Output.SdcStatus.choices)
    summary = serializers.DictField(child=serializers.IntegerField(), help_text=f"cells per rule: {', '.join(RULES)}")


class OutputListOut(serializers.Serializer):
    id = serializers.IntegerField()
    query = serializers.IntegerField()
    project = serializers.IntegerField()
    project_title = serializers.CharField()
    # A plain string in the schema: a choice field named "status" in several components collides
    # with the other apps' status enums (drf-spectacular W001).
    status = serializers.CharField(help_text=f"one of {', '.join(Output.Status.values)}")
    sdc = SdcOut()
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
    safe = _table(required=False, help_text="released outputs only: the released table, null where suppressed")


class OutputCheckerOut(OutputListOut):
    """The checker view (``view: checker``)."""

    view = NamedChoiceField(enum_name="CheckerViewEnum", choices=["checker"])

    columns = serializers.ListField(child=serializers.CharField(), help_text=f"the result's columns plus {N_PERSONS}")
    raw = _table()
    safe = _table(help_text="null where suppressed")
    flags = serializers.ListField(child=serializers.DictField(child=serializers.ListField(child=serializers.CharField())),
                                  help_text="per row: {column: [rules that fired]}")
    sql = serializers.CharField()
    rewritten_sql = serializers.CharField()
    differencing = serializers.ListField(child=serializers.DictField())
    sdc_rules = serializers.DictField()
    request_comment = serializers.CharField()
    reviews = CheckerReviewOut(many=True)
