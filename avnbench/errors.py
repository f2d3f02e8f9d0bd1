"""User-facing errors: one clear line that says what is wrong and what to do next."""


class AvnbenchError(Exception):
    """An error caused by input or configuration, shown to the user as one line (no traceback)."""


class DataError(AvnbenchError):
    """A dataset, image, label or manifest is missing, corrupt or inconsistent."""


class ConfigError(AvnbenchError):
    """An option, preset or method name is invalid."""


class PluginError(AvnbenchError):
    """A plugin failed to load or broke the method protocol."""
