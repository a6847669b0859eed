"""CPU time and peak memory of some processes (and their children) while a benchmark runs."""

import asyncio
import contextlib

import psutil


class ProcessMeter:
    """CPU time and peak resident memory of some processes (and their children) over a stretch."""

    def __init__(self, pids: list[int]):
        self._roots = [psutil.Process(pid) for pid in pids]
        self._seen: dict[int, psutil.Process] = {}
        self._cpu_start = self._cpu()
        self.peak_rss = 0
        self._sampler = asyncio.create_task(self._sample())

    def _processes(self) -> list[psutil.Process]:
        for root in self._roots:
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    self._seen.setdefault(process.pid, process)
        return list(self._seen.values())

    def _cpu(self) -> float:
        total = 0.0
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    async def _sample(self) -> None:
        while True:
            rss = 0
            for process in self._processes():
                with contextlib.suppress(psutil.Error):
                    rss += process.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)
            await asyncio.sleep(0.25)

    def stop(self) -> float:
        """CPU seconds used since the start."""
        self._sampler.cancel()
        return self._cpu() - self._cpu_start
