"""Opt-in differential privacy with Flower's own wrappers, mods and RDP accountant.

``dp = "client-fixed"``: each site clips its update to L2 norm ``C`` (``dp-clip``) before
it leaves (Flower's ``fixedclipping_mod``, applied by ``site_clipping_mod``);
``dp = "server-fixed"``: the server clips each update on arrival. Either way Flower's
wrapper (``DifferentialPrivacyClientSideFixedClipping`` / ``...ServerSideFixedClipping``)
adds Gaussian noise to the mean of the ``n`` sampled sites' updates:

    w_{t+1} = w_t + (1/n) sum_i clip_C(w_i - w_t) + N(0, (z C / n)^2 I),

with ``z`` the noise multiplier (``dp-noise``) and ``n`` = ``dp-sampled-sites`` (0: min-sites).
Sites count equally under DP (the noise calibration assumes a plain mean), so the guard
aggregates with equal weights.

Privacy spent is tracked by Flower's ``RdpAccountant`` (Google's ``dp-accounting`` package,
Renyi DP of the Gaussian mechanism): one release of noise multiplier ``z`` per round, at
site level (neighbouring federations differ by one site's whole data), with no sampling
amplification claimed. Each round's ``epsilon`` at ``dp-delta`` goes to metrics.json and the
log. What it covers: the adapter tensors of the training rounds; not the scalar metrics
(losses, example counts, evaluation figures) the sites also send.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import strategy as flower
from flwr.supercore.privacy_accounting import (
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)

from fedrag_flower.federation.adapters import is_packed, pack_sides, received_arrays
from fedrag_flower.federation.settings import FederationSettings

KEY_CLIPPING_NORM = "clipping_norm"  # the key Flower's wrapper and mod share


def sampled_sites(settings: FederationSettings) -> int:
    return settings.dp_sampled_sites or settings.min_sites


def privacy_accountant(settings: FederationSettings):
    """Flower's RDP accountant for ``settings`` (site-level, no amplification)."""
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    n = sampled_sites(settings)
    config = PrivacyConfig(
        target_delta=settings.dp_delta,
        population_size=n,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
    )
    return RdpAccountant(config)


def with_privacy(strategy: flower.Strategy, settings: FederationSettings) -> flower.Strategy:
    """``strategy`` inside Flower's fixed-clipping DP wrapper, or as is when ``dp="none"``.

    Under DP the strategy samples exactly ``n`` sites per round (``min_train_nodes = n``)
    and a round whose replies are not ``n`` usable ones releases nothing (Flower's strict
    accounted mode), so the accountant's count of releases stays true.
    """
    if settings.dp == "none":
        return strategy
    n = sampled_sites(settings)
    strategy.min_train_nodes = n
    strategy.fraction_train = min(strategy.fraction_train, 1e-9)  # sample exactly n
    wrapper = {
        "client-fixed": flower.DifferentialPrivacyClientSideFixedClipping,
        "server-fixed": flower.DifferentialPrivacyServerSideFixedClipping,
    }[settings.dp]
    return wrapper(
        strategy,
        noise_multiplier=settings.dp_noise,
        clipping_norm=settings.dp_clip,
        num_sampled_clients=n,
        accountant=privacy_accountant(settings),
    )


def privacy_spent(strategy) -> dict | None:
    """``{"epsilon", "delta", "releases", "noise-multiplier", "clipping-norm"}`` so far, or
    None without DP. ``strategy``: the guard, or the DP wrapper itself."""
    wrapper = getattr(strategy, "strategy", strategy)
    accountant = getattr(wrapper, "accountant", None)
    if accountant is None:
        return None
    spent = accountant.get_privacy_spent()
    epsilon = spent.epsilon if spent.num_releases else 0.0
    return {
        "epsilon": float(epsilon),
        "delta": float(spent.delta),
        "releases": int(spent.num_releases),
        "noise-multiplier": float(wrapper.noise_multiplier),
        "clipping-norm": float(wrapper.clipping_norm),
    }


def site_clipping_mod(msg: Message, context: Context, call_next) -> Message:
    """ClientApp mod: under client-side DP (the train config carries Flower's clipping
    norm) the site's update is clipped by Flower's ``fixedclipping_mod``; otherwise the
    message passes untouched.

    Flower's mod clips ``reply - sent`` key by key and needs the reply to hold the keys
    sent, in order. So the message is unpacked to its tensors by key first (the site then
    replies by key), the reply completed with the sent tensors it lacks (the untrained
    side, and the A matrices under ``lora-freeze-a``), all unchanged and adding 0 to the
    update's norm, and after clipping it is cut back to what the site trained and packed
    again as the server sent it: under DP a site sends what it sends without.
    """
    configs = list(msg.content.config_records.values()) if msg.has_content() else []
    if not configs or KEY_CLIPPING_NORM not in configs[0]:
        return call_next(msg, context)
    (key, record), *_ = msg.content.array_records.items()
    packed = is_packed(record)
    sent = received_arrays(msg.content) if packed else record
    received = msg.content  # left as it came: in one process a grid may read it again
    msg.content = RecordDict({**dict(received.items()), key: sent})
    trained: list[str] = []  # the keys the site's own reply held

    def completed_reply(inner_msg: Message, ctx: Context) -> Message:
        reply = call_next(inner_msg, ctx)
        if reply.has_error() or len(reply.content.array_records) != 1:
            return reply
        reply_key, arrays = next(iter(reply.content.array_records.items()))
        trained.extend(arrays.keys())
        reply.content[reply_key] = ArrayRecord(
            {k: arrays[k] if k in arrays else value for k, value in sent.items()}
        )
        return reply

    try:
        reply = fixedclipping_mod(msg, context, completed_reply)
    finally:
        msg.content = received
    if reply.has_error() or len(reply.content.array_records) != 1 or not trained:
        return reply
    reply_key, clipped = next(iter(reply.content.array_records.items()))
    own = ArrayRecord({k: clipped[k] for k in trained})
    reply.content[reply_key] = pack_sides(own) if packed else own
    return reply
