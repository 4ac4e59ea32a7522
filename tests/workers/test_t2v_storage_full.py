"""A render whose MP4 cannot be written because the disk is full ends `failed` with
`storage_full` and says what to do (issue 17). The write itself is not reproduced (that
needs a full filesystem); the job record is the real one in Redis."""

from __future__ import annotations

import errno

from gpt4video.jobs import JobRecord, JobStatus, JobStore
from workers.t2v_render import _record_failure


def test_a_full_disk_fails_the_job_with_storage_full(store: JobStore) -> None:
    record = JobRecord(id="storage-full-job", owner="tests", caption="a red ball")
    store.create(record)
    _record_failure(store, record.id, None, OSError(errno.ENOSPC, "No space left on device"))
    failed = store.get(record.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None and failed.error["code"] == "storage_full"
    assert "storage is full" in failed.error["message"]
