from .models import Notification


def notification_list_for(*, user):
    """``user``'s notifications, newest first (everyone sees only their own)."""
    if not getattr(user, "is_authenticated", False):
        return Notification.objects.none()
    return Notification.objects.filter(user_id=user.pk).order_by("-created_at", "-id")
