"""SQLAlchemy models on two real databases (SQLite file, PostgreSQL), with their locators.

The test process and the worker both import this module; the SQLite URL and the table suffix
come from the environment that tests/conftest.py sets before any worker starts. Nothing here
connects: the tables are made by the `sqlite_tables` and `pg_tables` fixtures, so only the
tests that ask for them need the databases.
"""

from __future__ import annotations

import os

from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker

from jobkit import Job, SQLAlchemyLocator, register_locator
from tests.jobs import record

SUFFIX = os.environ.get("JOBKIT_TEST_TABLE_SUFFIX", "local")


class SqliteBase(DeclarativeBase):
    pass


class PgBase(DeclarativeBase):
    pass


class User(SqliteBase):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200), default="Test User")


class Account(PgBase):
    __tablename__ = f"jobkit_test_accounts_{SUFFIX}"
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    region: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


sqlite_engine = create_engine(os.environ.get("JOBKIT_TEST_SQLITE_URL", "sqlite://"))
pg_engine = create_engine(os.environ.get(
    "JOBKIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
SqliteSession = scoped_session(sessionmaker(sqlite_engine))
PgSession = sessionmaker(pg_engine)

register_locator(SQLAlchemyLocator(SqliteSession, base=SqliteBase))
register_locator(SQLAlchemyLocator(PgSession, base=PgBase))


class WelcomeJob(Job):
    """Takes records as arguments; records what it saw when it ran."""

    def perform(self, user: User, accounts: list[Account]) -> None:
        record(job="WelcomeJob", user_type=type(user).__name__, email=user.email,
               accounts=[(a.code, a.region, a.name) for a in accounts])
