from django.db import migrations, models


class Migration(migrations.Migration):
    """Quota alerts fire once a month for each limit, not once a month whatever the limit (docs/architecture.md)."""

    dependencies = [
        ("usage", "0003_api_key_usage"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="quotaalert", name="quota_alert_once_per_period"),
        migrations.AddConstraint(
            model_name="quotaalert",
            constraint=models.UniqueConstraint(
                fields=("quota", "period", "threshold", "limit"), name="quota_alert_once_per_limit"
            ),
        ),
    ]
