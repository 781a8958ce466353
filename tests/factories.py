import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from access.models import Organisation, Sector, UserProfile
from environment.models import Dataset
from tre.roles import ROLE_ALIASES

PASSWORD = "correct-horse-battery"


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Organisation {n}")
    sector = Sector.ACADEMIC


class UserFactory(factory.django.DjangoModelFactory):
    """``UserFactory(role="dac", organisation=org_or_name)``; password is ``PASSWORD``."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(PASSWORD)

    @classmethod
    def _create(cls, model_class, *args, role=None, organisation=None, **kwargs):
        user = super()._create(model_class, *args, **kwargs)
        if role:
            for r in [role] if isinstance(role, str) else role:
                user.groups.add(Group.objects.get_or_create(name=ROLE_ALIASES[r].value)[0])
        org = organisation
        if isinstance(org, str):
            org = OrganisationFactory(name=org)
        profile, _ = UserProfile.objects.get_or_create(user=user)
        if org is not None and profile.organisation_id != org.pk:
            profile.organisation = org
            profile.save()
        return user


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"dataset_{n}")
    title = factory.LazyAttribute(lambda o: o.name.replace("_", " ").title())
    description = "A synthetic dataset for tests."
    identifier_column = "nhs_number"
    columns = factory.LazyFunction(lambda: [
        {"name": "nhs_number", "type": "text"},
        {"name": "region", "type": "text"},
        {"name": "age", "type": "integer"},
        {"name": "value", "type": "float"},
    ])
