"""Simplified Chinese: Django groups no digits (``THOUSAND_SEPARATOR = ""``), so a month's tokens read
12345678. Statements, invoices and consoles in mainland China group by three with a comma (12,345,678), as
the usage page, quotas and amounts in yuan need. Everything else is Django's (looked up there)."""

THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
