"""The one registry of audit actions. Every event's ``action`` is a member of ``AuditAction``.

Values are the stored strings (``<target>.<verb>``); auditors filter on them, so a value never
changes once released. Add a member here before writing a new kind of event.
"""

from enum import StrEnum


class AuditAction(StrEnum):
    # auth and users
    AUTH_LOGIN_SUCCEEDED = "auth.login_succeeded"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    USER_CREATED = "user.created"
    USER_ORGANISATION_SET = "user.organisation_set"
    USER_STAFF_SET = "user.staff_set"
    USER_EMAIL_SET = "user.email_set"
    ROLE_GRANTED = "role.granted"
    PERMISSION_GRANTED = "permission.granted"
    PERMISSION_REVOKED = "permission.revoked"
    ORGANISATION_CREATED = "organisation.created"
    # the audit log itself
    AUDIT_VIEWED = "audit.viewed"
    AUDIT_EXPORTED = "audit.exported"
    AUDIT_VERIFIED = "audit.verified"
    # environment
    DATASET_CREATED = "dataset.created"
    DATASET_DICTIONARY_CHANGED = "dataset.dictionary_changed"
    DATASET_TWIN_GENERATED = "dataset.twin_generated"
    DATASET_VERSION_UPLOADED = "dataset.version_uploaded"
    DATASET_VERSION_READY = "dataset.version_ready"
    DATASET_VERSION_FAILED = "dataset.version_failed"
    DATASET_VERSION_REQUEUED = "dataset.version_requeued"
    DATASET_ERASED = "dataset.erased"
    OPTOUT_REGISTERED = "optout.registered"
    OPTOUT_ERASURE_REQUEUED = "optout.erasure_requeued"
    # agreements
    AGREEMENT_CREATED = "agreement.created"
    AGREEMENT_ACTIVATED = "agreement.activated"
    AGREEMENT_REVOKED = "agreement.revoked"
    # projects
    PROJECT_CREATED = "project.created"
    PROJECT_UPDATED = "project.updated"
    PROJECT_SUBMITTED = "project.submitted"
    PROJECT_REVIEWED = "project.reviewed"
    PROJECT_APPROVED = "project.approved"
    PROJECT_REJECTED = "project.rejected"
    PROJECT_RETURNED = "project.returned"
    PROJECT_SUSPENDED = "project.suspended"
    PROJECT_REINSTATED = "project.reinstated"
    PROJECT_CLOSED = "project.closed"
    PROJECT_EXPIRED = "project.expired"
    PROJECT_MEMBER_ADDED = "project.member_added"
    PROJECT_MEMBER_REMOVED = "project.member_removed"
    # queries
    QUERY_SUBMITTED = "query.submitted"
    QUERY_STARTED = "query.started"
    QUERY_COMPLETED = "query.completed"
    QUERY_FAILED = "query.failed"
    QUERY_CANCEL_REQUESTED = "query.cancel_requested"
    QUERY_CANCELLED = "query.cancelled"
    QUERY_REQUEUED = "query.requeued"
    QUERY_RERUN = "query.rerun"
    QUERY_DUMMY_RUN = "query.dummy_run"
    # outputs
    OUTPUT_CREATED = "output.created"
    OUTPUT_RAW_VIEWED = "output.raw_viewed"
    OUTPUT_RELEASE_REQUESTED = "output.release_requested"
    OUTPUT_REVIEWED = "output.reviewed"
    OUTPUT_RELEASED = "output.released"
    OUTPUT_REJECTED = "output.rejected"
    OUTPUT_RETURNED = "output.returned"
    OUTPUT_WITHDRAWN = "output.withdrawn"
    OUTPUT_STALE = "output.stale"
    OUTPUT_DOWNLOADED = "output.downloaded"
    # operations
    SYSTEM_PING = "system.ping"


def action_of(value) -> AuditAction:
    """The registered action for ``value``; an unregistered string is a programming error."""
    try:
        return AuditAction(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a registered audit action (audit/actions.py)") from None
