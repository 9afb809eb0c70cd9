"""The peak RSS of a child Python process, as the child itself reads it.

getrusage's ru_maxrss is no measure of a child of the test process: subprocess starts it by vfork, and at
exec Linux folds the parent's high-water mark (the test process holds the loaded model, ~3 GiB) into the
child's maxrss. VmHWM in /proc/self/status belongs to the child's own address space.
"""

# Source for a child script: defines peak_kib(), the child's peak RSS so far in KiB.
PEAK_KIB_SOURCE = (
    "def peak_kib():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
)


class PeakThreads:
    """The most threads this process had at once while the block ran (sampled every 2 ms), less
    `others()` at each sample (threads of a test server in this process, say)."""

    def __init__(self, others=lambda: 0):
        self.others = others

    def __enter__(self):
        import threading

        self.peak, self._stop = threading.active_count() - self.others(), threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self):
        import threading
        import time

        while not self._stop.is_set():
            self.peak = max(self.peak, threading.active_count() - self.others())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._sampler.join()
