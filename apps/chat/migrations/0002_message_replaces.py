import django.db.models.deletion
from django.db import migrations, models

# Replies answered again before this migration were told apart by position: a plain reply (no
# tool calls) followed by another assistant message, failed ones not counted. Each such later
# message now names the reply it replaced, as the retry service does from here on.
BACKFILL = """
WITH ordered AS (
  SELECT id, role,
         LAG(id) OVER w AS previous_id, LAG(role) OVER w AS previous_role,
         LAG(tool_calls) OVER w AS previous_calls
    FROM chat_message
   WHERE status <> 'error'
  WINDOW w AS (PARTITION BY conversation_id ORDER BY created_at, id)
)
UPDATE chat_message m SET replaces_id = o.previous_id
  FROM ordered o
 WHERE m.id = o.id AND o.role = 'assistant' AND o.previous_role = 'assistant'
   AND o.previous_calls = '[]'::jsonb
"""


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="replaces",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="chat.message",
            ),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("replaces__isnull", False)), fields=["replaces"], name="chat_msg_replaces_idx"
            ),
        ),
    ]
