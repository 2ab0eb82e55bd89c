"""How qcluster's processes learn that the service is stopping.

Django-Q2 stops in order only on a signal to its leader (`manage.py qcluster`): the leader sets
the sentinel's stop event, the sentinel stops the pusher (after its blocking dequeue), hands
every worker a STOP pill once it is done with its task, and stops the monitor. The sentinel, the
pusher, the monitor and the workers ignore SIGINT and leave SIGTERM at its default, so:

- SIGTERM to the process group kills the sentinel outright, often inside `stop_event.wait()`
  with the event's lock held; the leader's `stop_event.set()` then waits for that lock forever;
- SIGINT to the process group (what a terminal's Ctrl-C does) reaches only the leader's handler.

runfleet therefore sends SIGINT to qcluster's group. A worker in the middle of a long job would
still finish it first, so workers also listen for that SIGINT (installed below on Django-Q2's
`post_spawn`) and long jobs check `stop_requested()` between their steps.

The pusher sees the stop only between two dequeues, and Django-Q2's Redis broker blocks for 1 s
in each; RedisBroker blocks for DEQUEUE_TIMEOUT instead (settings' Q_CLUSTER `broker_class`).
"""

from __future__ import annotations

import signal
import threading

from django_q.brokers.redis_broker import Redis
from django_q.signals import post_spawn

STOP_SIGNAL = signal.SIGINT
# Four idle BLPOPs a second cost Redis nothing, and a stop no longer waits up to a second for one.
DEQUEUE_TIMEOUT = 0.25

_stop_requested = threading.Event()


def stop_requested() -> bool:
    """True in a qcluster worker once the cluster was told to stop; a long job should end its run."""
    return _stop_requested.is_set()


def _request_stop(signum, frame) -> None:
    _stop_requested.set()


def _listen_for_stop(sender, proc_name: str, **kwargs) -> None:
    # The worker keeps running until its STOP pill: this only tells the job in hand to wrap up.
    signal.signal(STOP_SIGNAL, _request_stop)


def connect() -> None:
    post_spawn.connect(_listen_for_stop, dispatch_uid="fleet.cluster.listen_for_stop")


class RedisBroker(Redis):
    """Django-Q2's Redis broker, with a shorter blocking dequeue so the pusher stops sooner."""

    def dequeue(self):
        task = self.connection.blpop(self.list_key, DEQUEUE_TIMEOUT)
        if task:
            return [(None, task[1])]
        return None
