"""The consumer runtime both services run (sesguard.runtime.consumer explains it all).

Nothing here knows what a job, an S3 object or SES is; the services plug in a handler
that turns one message into a fate. Nothing here imports `sender` or `worker`.
"""

from sesguard.runtime.consumer import Consumer, ConsumerConfig, Handler, StopCause
from sesguard.runtime.delivery import Aborted, Delivery, report_progress
from sesguard.runtime.dependencies import Dependency
from sesguard.runtime.fates import DeadLetter, Defer, Done, Fate, GiveBack, Retry
from sesguard.runtime.retry import RetryPolicy, max_receive_count
from sesguard.runtime.sqs import queue_urls

__all__ = [
    "Aborted",
    "Consumer",
    "ConsumerConfig",
    "DeadLetter",
    "Defer",
    "Delivery",
    "Dependency",
    "Done",
    "Fate",
    "GiveBack",
    "Handler",
    "Retry",
    "RetryPolicy",
    "StopCause",
    "max_receive_count",
    "queue_urls",
    "report_progress",
]
