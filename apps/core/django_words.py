"""Django's own messages whose zh-hans translation we correct.

They are listed here only so that ``makemessages`` keeps them in our catalogue, which ``LOCALE_PATHS`` puts before
Django's. Django's zh-hans for a null character in a form field or an API string reads "不允许是用空字符串。"
("using an empty string is not allowed", with a typo), which is not what was wrong.
"""

from django.utils.translation import gettext_noop

CORRECTED = (gettext_noop("Null characters are not allowed."),)
