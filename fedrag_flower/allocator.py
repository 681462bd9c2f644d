"""Memory for training processes: mimalloc instead of glibc's malloc, a bounded oneDNN
primitive cache, and freed memory given back between a site's messages.

A RALT or LSR step allocates and frees many activation tensors of 0.1-30 MB. glibc's
malloc serves them from heaps that give memory back to the system only from the top, so a
site process keeps about 1 GB of freed memory on top of what it uses; making those blocks
separate mappings (``MALLOC_MMAP_THRESHOLD_``) frees it but page-faults every activation
in again and halves training speed. mimalloc keeps freed memory in per-size pages it
reuses; with freed pages purged only after 10 s unused (``MIMALLOC_PURGE_DELAY``; a
training step reuses them well within that) it is both smaller and faster here. One
default site round (24 pairs, ``ralt+lsr``, 2 cores, native bf16, alternating runs): peak
resident memory 3.57-3.68 GB with glibc, 2.87-3.08 GB with mimalloc (purging never); RALT
188-291 vs 310-348 real tokens/s in the same runs.

Between messages, :func:`release_free_memory` gives the freed pages back (mimalloc's forced
collect; ``malloc_trim`` under glibc). A simulation worker answers every site's messages in
turn: without it each site's round started on top of the last one's ~1.1 GB of freed
activations, and the worker peaked ~0.5 GB above a lone site. (A purge delay of -1, which
this module used before, means "never": a forced collect then returns nothing.)

oneDNN, which runs PyTorch's bf16 matrix products on CPU, caches a compiled kernel for every
new shape, up to 1024 by default, each holding its buffers: ~0.3 GB after one site's round
of variable-length batches. ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=64`` keeps what one step
reuses (0 would recompile every product: training ran 6x slower).

These must be in place before the process starts, so they are environment variables
inherited by every process a run starts (``scripts/simulate.sh`` sets them for ``flwr
run``; the SuperNode image sets them for its ClientApps)::

    eval "$(python -m fedrag_flower.allocator)"    # exports LD_PRELOAD, MIMALLOC_PURGE_DELAY, ...

mimalloc is left out where it is not installed (``pip install --no-deps cmeel-mimalloc``),
the platform is not Linux, or ``FEDRAG_ALLOCATOR=system`` is set. A variable already set
in the environment is kept as it is.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shlex
import sys
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "cmeel-mimalloc"
LIBRARY = "libmimalloc.so"
# Freed pages stay mapped while training reuses them: purging them sooner (mimalloc's
# default after 10 ms, or after 1 s) made every step fault its activations in again, as
# slow as glibc with mmap. Finite, so that memory left unused is given back (a simulation
# worker's peak: 3.14 GB with 10 s, 3.60 GB with ~23 days plus release_free_memory, 3.94 GB
# with -1) and release_free_memory can give back the rest.
ENVIRONMENT = {"MIMALLOC_PURGE_DELAY": "10000"}
ONEDNN_ENVIRONMENT = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64"}


def mimalloc_library() -> Path | None:
    """The installed mimalloc shared library, or ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == LIBRARY:
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    return None


def allocator_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables for new training processes: mimalloc preloaded where it can be, and
    the oneDNN cache bound; variables ``environ`` already sets are not repeated."""
    environ = os.environ if environ is None else environ
    wanted = dict(ONEDNN_ENVIRONMENT)
    library = mimalloc_library()
    if library is not None and environ.get("FEDRAG_ALLOCATOR", "mimalloc") != "system":
        preload = [str(library), *filter(None, environ.get("LD_PRELOAD", "").split(":"))]
        preload = list(dict.fromkeys(preload))  # once, first
        wanted |= {"LD_PRELOAD": ":".join(preload), **ENVIRONMENT}
    return {k: v for k, v in wanted.items() if k == "LD_PRELOAD" or k not in environ}


def release_free_memory() -> None:
    """Give the memory this process has freed back to the system: mimalloc's forced
    collect where it is loaded, glibc's ``malloc_trim`` otherwise (neither elsewhere).
    Call it between messages, when a round's activations are gone."""
    gc.collect()  # tensors held only by reference cycles go first
    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):  # no dynamic loader to ask (Windows)
        return
    if in_use() and hasattr(process, "mi_collect"):
        process.mi_collect(ctypes.c_bool(True))
    elif hasattr(process, "malloc_trim"):
        process.malloc_trim(ctypes.c_size_t(0))


def in_use() -> bool:
    """Whether this process runs with mimalloc loaded."""
    try:
        return LIBRARY in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def main() -> None:
    for name, value in allocator_environment().items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
