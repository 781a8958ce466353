from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF token auth whose tokens expire ``TRE_TOKEN_TTL_HOURS`` after they were issued."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token.created < timezone.now() - timedelta(hours=settings.TRE_TOKEN_TTL_HOURS):
            raise exceptions.AuthenticationFailed("token expired; request a new one at /api/v1/auth/token/")
        return user, token
