"""Exceptions that the CLI turns into one clear line and exit code 2."""


class RefineError(Exception):
    """A user-facing problem: bad config, missing input, unusable output directory."""


class ConfigError(RefineError):
    """The config cannot be used; the message names the YAML path and the problem."""


class InputError(RefineError):
    """An input path or URL cannot be resolved or opened."""


class RunIncomplete(RefineError):
    """Some parts failed after their retries; the rest is written and a re-run retries them."""
