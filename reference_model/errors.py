"""Errors the model raises for bad input; each message is one line saying what is wrong."""


class ConfigError(ValueError):
    """Unknown preset, unreadable config file, or a config missing or mistyping a field."""


class CheckpointError(ValueError):
    """Missing checkpoint file, or one whose keys or shapes do not match the config."""
