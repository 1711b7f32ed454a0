"""The "consent auditor" group: view-only access to everything mcp_consent records."""

from django.db import migrations

GROUP = "consent auditor"
VIEW = {
    "mcp_consent": [
        "mcpclient", "redirecturi", "consent", "authorizationtransaction",
        "upstreamidentity", "upstreamtoken", "auditevent",
    ],
    "oauth2_provider": ["application", "accesstoken", "refreshtoken", "grant"],
}


def create_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrate; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, models in VIEW.items():
        for model in models:
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=f"view_{model}"
            ).first()
            if permission is not None:
                group.permissions.add(permission)


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("mcp_consent", "0002_audit_and_sign_in"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
