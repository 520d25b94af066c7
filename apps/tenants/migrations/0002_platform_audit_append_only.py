"""The platform audit trail is append-only: PostgreSQL rejects UPDATE and DELETE on it."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION tenants_platformauditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'platform audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER tenants_platformauditevent_append_only
    BEFORE UPDATE OR DELETE ON tenants_platformauditevent
    FOR EACH ROW EXECUTE FUNCTION tenants_platformauditevent_append_only();

CREATE TRIGGER tenants_platformauditevent_no_truncate
    BEFORE TRUNCATE ON tenants_platformauditevent
    FOR EACH STATEMENT EXECUTE FUNCTION tenants_platformauditevent_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS tenants_platformauditevent_no_truncate ON tenants_platformauditevent;
DROP TRIGGER IF EXISTS tenants_platformauditevent_append_only ON tenants_platformauditevent;
DROP FUNCTION IF EXISTS tenants_platformauditevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
