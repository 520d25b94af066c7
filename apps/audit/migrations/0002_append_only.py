"""A tenant's audit trail is append-only: PostgreSQL rejects UPDATE, DELETE and TRUNCATE."""

from django.db import migrations

FORWARD = """
CREATE TRIGGER audit_auditevent_append_only
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION public.hydronet_append_only();
CREATE TRIGGER audit_auditevent_no_truncate
    BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION public.hydronet_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS audit_auditevent_no_truncate ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_auditevent_append_only ON audit_auditevent;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        # public.hydronet_append_only() is created in the public schema, which is
        # always migrated before any tenant schema.
        ("tenants", "0003_append_only_function"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
