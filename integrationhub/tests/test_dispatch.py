from django.db import transaction

from integrationhub.dispatch import enqueue_on_commit


class RecordingTask:
    name = "tests.recording_task"

    def __init__(self):
        self.calls = []

    def apply_async(self, args=(), kwargs=None, **options):
        self.calls.append((args, kwargs, options))


def test_task_is_published_only_after_the_transaction_commits(db, django_capture_on_commit_callbacks):
    # given a transaction in progress
    task = RecordingTask()
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        # when a task is enqueued inside it
        enqueue_on_commit(task, 42, queue="delivery", reason="x")
        # then nothing is published before commit
        assert task.calls == []
    assert len(callbacks) == 1
    # when the commit hooks run
    callbacks[0]()
    # then the task is published once, with its arguments and queue
    assert task.calls == [((42,), {"reason": "x"}, {"queue": "delivery"})]


def test_rolled_back_transaction_publishes_nothing(transactional_db):
    task = RecordingTask()
    try:
        with transaction.atomic():
            enqueue_on_commit(task, 1)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert task.calls == []
