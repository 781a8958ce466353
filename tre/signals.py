from django.contrib.auth.models import Group
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from .roles import Role


@receiver(post_migrate)
def ensure_role_groups(sender, **kwargs):
    """Every role group exists after ``migrate``."""
    if sender.name != "tre":
        return
    for role in Role:
        Group.objects.get_or_create(name=role.value)
