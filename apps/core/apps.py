from django.apps import AppConfig
from django.core import checks


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from apps.core.checks import check_outbound_allowlist_is_empty

        checks.register(check_outbound_allowlist_is_empty, checks.Tags.security, deploy=True)
