# One name for one thing (issue 12): a query's column plan and the *names* of the datasets it
# reads are not a project's datasets (a many-to-many) nor an output's column names.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('queries', '0002_task_id'),
    ]

    operations = [
        migrations.RenameField(model_name='query', old_name='columns', new_name='column_plan'),
        migrations.RenameField(model_name='query', old_name='datasets', new_name='dataset_names'),
    ]
