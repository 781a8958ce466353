from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def ensure_role_groups(sender, **kwargs):
    """Every role group exists after ``migrate``."""
    if sender.name != "tre":
        return
    from django.contrib.auth.models import Group

    from .roles import Role

    for role in Role:
        Group.objects.get_or_create(name=role.value)
