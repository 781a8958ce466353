# Organisation and UserProfile moved here from ``access`` (issue 12). The tables already exist
# (created by access.0001_initial), so this migration changes Django's state only.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('access', '0002_agreement'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Organisation',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=200, unique=True)),
                        ('sector', models.CharField(choices=[('academic', 'Academic'), ('nhs', 'Nhs'), ('commercial', 'Commercial'), ('charity', 'Charity'), ('government', 'Government')], default='academic', max_length=20)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={'ordering': ['name'], 'db_table': 'access_organisation'},
                ),
                migrations.CreateModel(
                    name='UserProfile',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('organisation', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='people', to='organisations.organisation')),
                        ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='profile', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={'db_table': 'access_userprofile'},
                ),
            ],
        ),
    ]
