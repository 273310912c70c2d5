"""The result file of a finished job: every metrics report as CSV, like OpenAI's step_metrics.csv.

OpenAI's columns come first (its `train_accuracy` is our `train_mean_token_accuracy`), then every
other figure the reports carry, in the order they first appear.
"""

import csv
import io

from tunery_common.bus import Bus
from tunery_common.ids import new_id
from tunery_common.records import FileRecord, JobRecord

RESULTS_PURPOSE = "fine-tune-results"
RESULTS_FILENAME = "step_metrics.csv"
# column → key of the metrics report
OPENAI_COLUMNS = {
    "step": "step",
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
}


def metrics_csv(history: list[dict]) -> bytes:
    columns = dict(OPENAI_COLUMNS)
    taken = set(columns.values())
    for report in history:
        for key in report:
            if key not in taken:
                columns[key] = key
                taken.add(key)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for report in history:
        writer.writerow(["" if report.get(key) is None else report[key] for key in columns.values()])
    return out.getvalue().encode()


async def store_results(bus: Bus, job: JobRecord, history: list[dict]) -> FileRecord:
    """The CSV as a file of the job's org, downloadable through /v1/files/{id}/content."""
    data = metrics_csv(history)
    record = FileRecord(
        id=new_id("file"), org=job.org, bytes=len(data), filename=RESULTS_FILENAME, purpose=RESULTS_PURPOSE
    )
    # Bytes first, record second: a visible file always has its content.
    await bus.put_object(record.object_name, data)
    await bus.files.create(job.org, record.id, record)
    return record
