"""The domain error tree, raised inside and translated once at each edge (CLI, HTTP, GraphQL)."""

from __future__ import annotations


class PersonaError(Exception):
    """Base of every error persona-graph raises on purpose."""

    code = "INTERNAL"


class InvalidInput(PersonaError, ValueError):
    """The caller sent something we cannot accept (a ValueError too, as scikit-learn expects)."""

    code = "BAD_USER_INPUT"


class NotFound(PersonaError):
    """The thing asked for does not exist."""

    code = "NOT_FOUND"


class Conflict(PersonaError):
    """The request contradicts what is already stored (e.g. an edited, applied migration)."""

    code = "CONFLICT"


class EnvironmentProblem(PersonaError):
    """Something the machine must provide is missing (Java, Maven, a free port...)."""

    code = "ENVIRONMENT"


class Unauthenticated(PersonaError):
    """No credentials, or credentials that match no live API key (unknown or revoked)."""

    code = "UNAUTHENTICATED"


class Forbidden(PersonaError):
    """Valid credentials whose role does not allow the operation."""

    code = "FORBIDDEN"


class LimitExceeded(PersonaError):
    """A request over a configured limit (page size, query depth, aliases, cost, tokens)."""

    code = "LIMIT_EXCEEDED"
