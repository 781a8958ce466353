from django.conf import settings
from django.db import models


class Dataset(models.Model):
    """A dataset registered by a custodian. Its rows live only in the store (DuckDB files)."""

    class ColumnType(models.TextChoices):
        INTEGER = "integer"
        FLOAT = "float"
        TEXT = "text"
        DATE = "date"
        BOOLEAN = "boolean"

    name = models.CharField(max_length=63, unique=True)  # the SQL table name researchers query
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    identifier_column = models.CharField(max_length=63)  # e.g. nhs_number: replaced by person_id on ingestion
    columns = models.JSONField(default=list)  # [{name, type, drop?, description?}]
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name
