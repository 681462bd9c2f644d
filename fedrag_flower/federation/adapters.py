"""Adapter tensors to and from Flower records: the one conversion every path uses.

On the wire (server <-> site messages) each side's adapter travels as **one flat array**
(``pack_sides``): Flower stores and sends every ``Array`` of a message, and every chunk of
it, as its own object, one request per object per hop (ServerApp -> SuperLink -> SuperNode
-> ClientApp). The default adapters' 264 tensors are 272 objects before training (equal
chunks are stored once) and 530 after training; packed, the same 7.4 MB are 7 objects.
The message's config record carries the layout (``LAYOUT_KEY``: each tensor's key and
shape, in packing order); a site checks it against its own adapter before unpacking, and
the server unpacks replies with the layout it sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedrag_flower.rag.lora import FROZEN_A_MARK

ADAPTER_PREFIXES = ("generator.", "retriever.")
SIDES = tuple(prefix[:-1] for prefix in ADAPTER_PREFIXES)  # the packed arrays' keys
LAYOUT_KEY = "adapter-layout"  # config record entry: ["key:d0xd1", ...] in packing order


def adapter_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """An ``ArrayRecord`` of prefixed adapter tensors (``generator.*`` / ``retriever.*``).

    Refuses anything else, so no text, embedding or per-example score can ride along.
    """
    bad = [k for k in state if not k.startswith(ADAPTER_PREFIXES)]
    if bad:
        raise ValueError(f"only adapter tensors may leave a site; unexpected keys: {bad[:3]}")
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def adapter_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The prefixed adapter tensors held in ``record``."""
    return dict(record.to_torch_state_dict())


def is_sent_key(key: str, trained_prefixes: tuple[str, ...], frozen_a: bool = False) -> bool:
    """Whether a site sends the prefixed adapter tensor ``key`` after a round that trains
    the sides ``trained_prefixes``: every tensor of those sides, or only their B matrices
    when A is frozen (``lora-freeze-a``: A never changes, so it need not travel back)."""
    return key.startswith(trained_prefixes) and not _frozen(key, frozen_a)


def _frozen(key: str, frozen_a: bool) -> bool:
    """Whether ``key`` is an A matrix that never changes (``lora-freeze-a``)."""
    return frozen_a and FROZEN_A_MARK in key


def merge_into(previous: ArrayRecord, update: ArrayRecord) -> ArrayRecord:
    """``previous`` with the tensors that ``update`` holds replaced: a round that trains
    only one side (RALT: generator, LSR: retriever) keeps the other side's global tensors."""
    merged = dict(previous.items())
    merged.update(update.items())
    return ArrayRecord(merged)


def is_packed(record: ArrayRecord) -> bool:
    """Whether ``record`` is in the wire form of ``pack_sides``."""
    return len(record) > 0 and set(record.keys()) <= set(SIDES)


def pack_sides(record: ArrayRecord) -> ArrayRecord:
    """``record``'s prefixed tensors as one flat array per side (keys ``generator`` and
    ``retriever``), each the concatenation of the side's tensors in sorted key order.
    A record already packed is returned as it is."""
    if is_packed(record):
        return record
    packed = {}
    for side, prefix in zip(SIDES, ADAPTER_PREFIXES):
        keys = sorted(k for k in record.keys() if k.startswith(prefix))
        if not keys:
            continue
        values = [record[k].numpy() for k in keys]
        dtypes = sorted({str(v.dtype) for v in values})
        if len(dtypes) != 1:
            raise ValueError(f"the {side} adapter mixes dtypes {dtypes}: it cannot be packed")
        packed[side] = Array(np.concatenate([v.ravel() for v in values]))
    other = [k for k in record.keys() if not k.startswith(ADAPTER_PREFIXES)]
    if other:
        raise ValueError(f"only adapter tensors may leave a site; unexpected keys: {other[:3]}")
    return ArrayRecord(packed)


def unpack_sides(record: ArrayRecord, layout: Mapping[str, tuple[int, ...]]) -> ArrayRecord:
    """The prefixed tensors of a packed ``record``, cut by ``layout`` (key -> shape: the
    receiving end's own adapter, see ``adapter_layout``). A record that is not packed is
    returned as it is. Raises ``ValueError`` when a side's size is not the layout's."""
    if not is_packed(record):
        return record
    tensors = {}
    for side, prefix in zip(SIDES, ADAPTER_PREFIXES):
        if side not in record:
            continue
        flat = record[side].numpy()
        keys = sorted(k for k in layout if k.startswith(prefix))
        sizes = [math.prod(layout[k]) for k in keys]
        if flat.ndim != 1 or flat.size != sum(sizes):
            raise ValueError(
                f"the {side} adapter received holds {flat.size} values in shape {flat.shape}; "
                f"this end's {side} adapter has {sum(sizes)} in {len(keys)} tensors: the two "
                "ends were built with different LoRA settings or models"
            )
        offset = 0
        for key, size in zip(keys, sizes):
            tensors[key] = Array(flat[offset : offset + size].reshape(layout[key]))
            offset += size
    return ArrayRecord(tensors)


def adapter_layout(tensors: Mapping) -> dict[str, tuple[int, ...]]:
    """Key -> shape of adapter tensors (torch tensors or Flower ``Array``s), sorted by key
    (the packing order)."""
    return {k: tuple(tensors[k].shape) for k in sorted(tensors)}


def reply_layout(global_tensors: Mapping, frozen_a: bool = False) -> dict[str, tuple[int, ...]]:
    """The layout a site's packed training reply is cut by, given the tensors it was sent:
    each side it carries holds all that side's tensors, less the A matrices when they are
    frozen (``is_sent_key``)."""
    return adapter_layout({k: v for k, v in global_tensors.items() if not _frozen(k, frozen_a)})


def layout_entry(layout: Mapping[str, tuple[int, ...]]) -> list[str]:
    """``layout`` as a config record value: ``["key:d0xd1", ...]`` in packing order."""
    return [f"{k}:{'x'.join(str(d) for d in layout[k])}" for k in sorted(layout)]


def layout_from_entry(entry: list[str]) -> dict[str, tuple[int, ...]]:
    """The inverse of ``layout_entry``."""
    layout = {}
    for item in entry:
        key, _, dims = str(item).rpartition(":")
        layout[key] = tuple(int(d) for d in dims.split("x")) if dims else ()
    return layout


def layout_mismatch(sent: Mapping, own: Mapping, sides: list[str]) -> str | None:
    """Why a site cannot load adapters of layout ``sent`` into its own (``own``), for the
    sides sent; None when it can."""
    for side in sides:
        prefix = side + "."
        theirs = {k: v for k, v in sent.items() if k.startswith(prefix)}
        mine = {k: v for k, v in own.items() if k.startswith(prefix)}
        for key in sorted(set(theirs) | set(mine)):
            if theirs.get(key) != mine.get(key):
                return (
                    f"the server's {side} adapter has {key!r} with shape {theirs.get(key)}, "
                    f"this site's has {mine.get(key)}: the site was built with other LoRA "
                    "settings or another base model than the server's run config"
                )
    return None


def pack_content(content: RecordDict) -> None:
    """Put a server message's adapters into the wire form, in place: each ArrayRecord
    packed, its layout added to the config record (made if there is none)."""
    for key, record in list(content.array_records.items()):
        if is_packed(record):
            continue
        entry = layout_entry(adapter_layout(record))
        content[key] = pack_sides(record)
        configs = list(content.config_records.values())
        if not configs:
            content["config"] = ConfigRecord({})
            configs = [content["config"]]
        for config in configs:
            config[LAYOUT_KEY] = entry


def received_arrays(content: RecordDict) -> ArrayRecord:
    """A server message's adapters by key, unpacked with the layout the message carries
    (a message in the per-tensor form is returned as it is)."""
    record = content["arrays"]
    if not is_packed(record):
        return record
    configs = [c for c in content.config_records.values() if LAYOUT_KEY in c]
    if not configs:
        raise ValueError(f"packed adapters arrived without their layout ('{LAYOUT_KEY}')")
    return unpack_sides(record, layout_from_entry(list(configs[0][LAYOUT_KEY])))
