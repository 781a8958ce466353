from django.conf import settings
from django.db import models


class Sector(models.TextChoices):
    ACADEMIC = "academic"
    NHS = "nhs"
    COMMERCIAL = "commercial"
    CHARITY = "charity"
    GOVERNMENT = "government"


class Organisation(models.Model):
    name = models.CharField(max_length=200, unique=True)
    sector = models.CharField(max_length=20, choices=Sector.choices, default=Sector.ACADEMIC)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class UserProfile(models.Model):
    """What tre knows of a user beyond Django's auth: the (at most one) organisation."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    organisation = models.ForeignKey(Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="people")

    def __str__(self):
        return f"{self.user} @ {self.organisation or '-'}"
