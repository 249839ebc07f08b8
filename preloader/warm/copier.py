"""Host-to-device copies out of one reader's host buffers: submit one, wait for one buffer, drain them all.

A reader fills buffer `turn` from the file, submits its copy, and before filling that buffer again
waits for that copy: on CUDA the copy runs asynchronously on the reader's own stream, so reusing
the buffer any earlier would send the next chunk's bytes to the previous chunk's place. This seam
is what the loader talks to, so a test can hand it copies that complete late and check that no
buffer is refilled while its copy is pending.
"""

from __future__ import annotations


class SyncCopier:
    """The CPU device: a copy is finished when `submit` returns."""

    def submit(self, turn: int, source, target) -> None:
        target.copy_(source)

    def wait(self, turn: int) -> None:
        pass

    def drain(self) -> None:
        pass


class CudaCopier:
    """Copies on a side stream of the reader's own, one event per host buffer.

    The stream first waits for `after`, the caller's current stream: the device buffers were
    allocated there, perhaps from memory the caller's queued kernels still use.
    """

    def __init__(self, torch, device, after, turns: int = 2) -> None:
        self.torch = torch
        self.stream = torch.cuda.Stream(device)
        self.stream.wait_stream(after)
        # Blocking events: a thread waiting for its copy sleeps instead of spinning on a core
        # that the other readers need.
        self.copied = [torch.cuda.Event(blocking=True) for _ in range(turns)]
        self.pending = [False] * turns

    def submit(self, turn: int, source, target) -> None:
        with self.torch.cuda.stream(self.stream):
            target.copy_(source, non_blocking=True)
        self.copied[turn].record(self.stream)
        self.pending[turn] = True

    def wait(self, turn: int) -> None:
        if self.pending[turn]:
            self.copied[turn].synchronize()
            self.pending[turn] = False

    def drain(self) -> None:
        self.stream.synchronize()
        self.pending = [False] * len(self.pending)


def make_copier(torch, device, after):
    """The copier for one reader thread on `device`; `after` is the caller's current CUDA stream (None on cpu)."""
    return CudaCopier(torch, device, after) if device.type == "cuda" else SyncCopier()
