"""Organisations, what tre knows of a person beyond Django's auth, and the shared vocabularies.

The lowest domain layer: every app above may read these; this app imports none of them. The
tables keep the names they had when they lived in ``access/`` (``access_organisation``,
``access_userprofile``), so moving them changed no data (see the state-only migrations).
"""

from django.conf import settings
from django.db import models


class Sector(models.TextChoices):
    ACADEMIC = "academic"
    NHS = "nhs"
    COMMERCIAL = "commercial"
    CHARITY = "charity"
    GOVERNMENT = "government"


class Purpose(models.TextChoices):
    """The one vocabulary of purposes: a project's ``purpose_categories`` and an agreement's
    ``prohibited_uses`` are both drawn from it (DESIGN §8)."""

    HEALTH_RESEARCH = "health_research"
    SERVICE_PLANNING = "service_planning"
    PUBLIC_HEALTH = "public_health"
    COMMERCIAL_PRODUCT_DEVELOPMENT = "commercial_product_development"
    MARKETING = "marketing"
    INSURANCE = "insurance"
    OTHER = "other"


class Organisation(models.Model):
    name = models.CharField(max_length=200, unique=True)
    sector = models.CharField(max_length=20, choices=Sector.choices, default=Sector.ACADEMIC)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "access_organisation"
        ordering = ["name"]

    def __str__(self):
        return self.name


class UserProfile(models.Model):
    """What tre knows of a user beyond Django's auth: the (at most one) organisation."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="people")

    class Meta:
        db_table = "access_userprofile"

    def __str__(self):
        return f"{self.user} @ {self.organisation or '-'}"
