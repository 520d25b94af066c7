"""Number and date formats where HydroNet differs from Django's locale defaults (``FORMAT_MODULE_PATH``)."""
