"""Warming a snapshot's weights before the hand-off.

- `mode`: what `--warm` and `--dtype` ask for (no imports beyond the standard library);
- `page_cache`: reading weights into RAM with parallel large reads;
- `memlock`: keeping those pages resident (mlock) for a sidecar;
- `safetensors`: reading and checking safetensors headers, without torch;
- `gpu`: every tensor onto a CUDA device through pinned buffers (torch, imported only there);
- `copier`: the host-to-device copies of one reader (submit / wait / drain), CUDA or synchronous;
- `placement`: tensors from a file's bytes on the device (views, or cast into one buffer), checked;
- `snapshot`: which files of a snapshot to warm, and warming one snapshot as a mode says.

This module imports none of them: a plain start never pays for warming.
"""
