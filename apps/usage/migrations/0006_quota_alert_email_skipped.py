from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("usage", "0005_quota_alert_spending_cap"),
    ]

    operations = [
        migrations.AddField(
            model_name="quotaalert",
            name="email_skipped",
            field=models.BooleanField(db_default=False),
        ),
    ]
