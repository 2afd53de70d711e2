"""Errors of the PostgreSQL toolbox, importable without SQLAlchemy or pandas (the CLI catches them)."""


class DatabaseConfigError(RuntimeError):
    """TIS_DATABASE_URL is wrong or its server is unreachable; the message names the fix."""
