# Organisation and UserProfile moved to ``organisations`` (same tables): state only. Runs after
# every model that pointed at them points at the new app.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('access', '0002_agreement'),
        ('organisations', '0001_initial'),
        ('projects', '0002_organisation_moved'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name='agreement',
                    name='organisation',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='agreements', to='organisations.organisation'),
                ),
                migrations.DeleteModel(name='UserProfile'),
                migrations.DeleteModel(name='Organisation'),
            ],
        ),
    ]
