"""The small exception hierarchy of Postdesk.

Expected outcomes (a refused sender, an ignored auto-reply) are values, never
exceptions; these classes mean broken configuration, broken infrastructure or a
request an admin has to correct.
"""


class GatewayError(Exception):
    """Base class: a problem a person can act on; ``str()`` is one clear line."""


class ConfigError(GatewayError):
    """The configuration file is missing, unreadable, or has an unknown or invalid key."""


class AdminError(GatewayError):
    """An admin command cannot be carried out (unknown organisation, cap reached, ...)."""


class StorageUnavailable(GatewayError):
    """The database could not be reached or refused the write; the caller should retry later."""
