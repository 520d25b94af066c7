from django.db import migrations, models


class Migration(migrations.Migration):
    """Quota alerts also record the month's overage reaching the spending cap (no change to the table)."""

    dependencies = [
        ("usage", "0004_quota_alert_once_per_limit"),
    ]

    operations = [
        migrations.AlterField(
            model_name="quotaalert",
            name="quota",
            field=models.CharField(
                choices=[
                    ("api_calls", "API calls"),
                    ("storage", "Storage"),
                    ("users", "Users"),
                    ("mcp_services", "MCP services"),
                    ("spending_cap", "Spending cap"),
                ],
                max_length=16,
                verbose_name="quota",
            ),
        ),
    ]
