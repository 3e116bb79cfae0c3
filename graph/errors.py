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


class SchemaBehind(PersonaError):
    """The database lacks migrations this code needs (`personas migrate` applies them)."""

    code = "SCHEMA_BEHIND"


class Unauthenticated(PersonaError):
    """No credentials, or credentials that match no live API key (unknown or revoked)."""

    code = "UNAUTHENTICATED"


class Forbidden(PersonaError):
    """Valid credentials whose role does not allow the operation."""

    code = "FORBIDDEN"


class LimitExceeded(PersonaError):
    """A request over a configured limit (page size, query depth, aliases, cost, tokens)."""

    code = "LIMIT_EXCEEDED"


class RateLimited(PersonaError):
    """A caller over its request rate; ``retry_after`` says in how many seconds to try again."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReadTimedOut(PersonaError):
    """A read ran past its server-side timeout (PERSONAS_API_READ_TIMEOUT_S)."""

    code = "TIMEOUT"


class ConfigurationError(PersonaError):
    """The process is configured in a way it must not run with (e.g. no pseudonymization key
    outside demo mode, an unreadable secret file)."""

    code = "CONFIGURATION"


class InvalidRecords(InvalidInput):
    """A batch with bad records (a context file, a webhook push): nothing of it is written.

    ``problems`` names each bad record and its reason, for an answer listing them one by one.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems
        """(record, reason) pairs, e.g. ``("weather[3] (id 'wx-1')", "temp_c: ...")``."""


class Upstream(PersonaError):
    """An external service (a weather provider) failed or answered something unusable."""

    code = "UPSTREAM"


class Unavailable(PersonaError):
    """A feature this process is not configured for (e.g. the CRM webhook without a secret)."""

    code = "UNAVAILABLE"
