"""The training run's CPU-time clock, checked against CPU time rather than the wall clock (which a
shared host stretches): a thread that has burnt 0.2 s of its own CPU adds at least that to the
process's figure, whatever else runs."""

import threading
import time

from helpers.train.run import cpu_seconds


def test_cpu_seconds_counts_the_cpu_time_of_every_thread():
    spent = []

    def spin():
        while time.thread_time() < 0.2:
            pass
        spent.append(time.thread_time())

    before = cpu_seconds()
    worker = threading.Thread(target=spin)
    worker.start()
    worker.join()
    assert cpu_seconds() - before >= spent[0] >= 0.2
