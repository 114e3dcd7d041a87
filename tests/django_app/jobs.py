from jobkit import Job
from tests.django_app.models import Post

SEEN: list[str] = []


class PublishJob(Job):
    def perform(self, post: Post) -> None:
        SEEN.append(post.title)
