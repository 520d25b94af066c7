"""Django's messages we translate better than Django does."""

from django.core.validators import ProhibitNullCharactersValidator
from django.utils import translation


def test_a_null_character_is_named_in_chinese() -> None:
    with translation.override("zh-hans"):
        assert str(ProhibitNullCharactersValidator.message) == "不允许包含空字符（NUL）。"
