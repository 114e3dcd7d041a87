"""The Sidekiq tutorials' example: a TaskLoggerJob that writes a Log row per task."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from jobkit import Job
from mailers.user_mailer import UserMailer
from tests.models import SqliteBase, SqliteSession


class Log(SqliteBase):
    __tablename__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(String(200))


class TaskLoggerJob(Job):
    def perform(self, task_id: int, message: str = "done") -> None:
        session = SqliteSession()
        session.add(Log(task_id=task_id, message=message))
        session.commit()


class FanOutJob(Job):
    """Enqueues one TaskLoggerJob per task: drain() must run those too."""

    def perform(self, task_ids: list[int]) -> None:
        for task_id in task_ids:
            TaskLoggerJob.perform_later(task_id)


class SignupJob(Job):
    def perform(self, user) -> None:
        UserMailer.welcome(user).deliver_later()


def logged() -> list[int]:
    session = SqliteSession()
    try:
        return sorted(log.task_id for log in session.query(Log))
    finally:
        SqliteSession.remove()
