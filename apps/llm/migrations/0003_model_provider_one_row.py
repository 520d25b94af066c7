from django.db import migrations, models


def keep_one_row_as_pk_1(apps, schema_editor):
    """The row the app used (the lowest pk: ``.first()``) becomes pk 1; any other was left by a race."""
    ModelProvider = apps.get_model("llm", "ModelProvider")
    rows = list(ModelProvider.objects.order_by("pk").values_list("pk", flat=True))
    if not rows:
        return
    ModelProvider.objects.exclude(pk=rows[0]).delete()
    if rows[0] != 1:
        ModelProvider.objects.filter(pk=rows[0]).update(id=1)


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0002_assistant_settings"),
    ]

    operations = [
        migrations.RunPython(keep_one_row_as_pk_1, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="modelprovider",
            constraint=models.CheckConstraint(condition=models.Q(("id", 1)), name="llm_model_provider_one_row"),
        ),
    ]
