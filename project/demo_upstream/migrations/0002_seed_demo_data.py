"""Seed the demo accounts (octocat and hubot, password "demo") and their items."""

from django.db import migrations


def seed(apps, schema_editor):
    from project.demo_upstream.seed import seed_demo_data

    seed_demo_data(apps)


class Migration(migrations.Migration):
    dependencies = [("demo_upstream", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
