"""The server strategy named by the run config: Flower 1.42's own class, guarded.

``build_strategy(settings)`` returns an ``AdapterStrategy`` around one of
``flwr.serverapp.strategy``'s classes (optionally inside a DP wrapper, see ``privacy``):

======================  ===============================  ==================================
``strategy``            Flower class                     run-config keys it reads
======================  ===============================  ==================================
``fedavg``              ``FedAvg``                       (weights: ``num-examples``)
``fedavgm``             ``FedAvgM``                      ``server-lr``, ``server-momentum``
``fedprox``             ``FedProx``                      ``proximal-mu`` (sent to sites)
``fedadam``             ``FedAdam``                      ``fedopt-eta/-beta-1/-beta-2/-tau``
``fedyogi``             ``FedYogi``                      same
``fedadagrad``          ``FedAdagrad``                   ``fedopt-eta``, ``fedopt-tau``
``fedmedian``           ``FedMedian``                    (coordinate-wise median)
``fedtrimmedavg``       ``FedTrimmedAvg``                ``trimmed-beta``
``krum``                ``Krum``                         ``malicious-sites``
``multikrum``           ``MultiKrum``                    ``malicious-sites``, ``krum-select``
``bulyan``              ``Bulyan``                       ``malicious-sites`` (needs
                                                         ``4 * malicious-sites + 3`` sites)
======================  ===============================  ==================================

The resumable state of a strategy (FedAvgM's momentum, the FedOpt moments, the DP
accountant) is read and restored by ``strategy_state`` / ``load_strategy_state``.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp import strategy as flower

from fedrag_flower.federation.adapter_strategy import AdapterStrategy
from fedrag_flower.federation.settings import FederationSettings


def flower_strategy(settings: FederationSettings) -> flower.Strategy:
    """The Flower strategy of ``settings.strategy``, sampling and minimums from settings."""
    common = dict(
        fraction_train=settings.fraction_train,
        fraction_evaluate=settings.fraction_evaluate,
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites if settings.fraction_evaluate > 0 else 0,
        min_available_nodes=settings.min_sites,
    )
    fedopt = dict(eta=settings.fedopt_eta, tau=settings.fedopt_tau)
    moments = dict(beta_1=settings.fedopt_beta_1, beta_2=settings.fedopt_beta_2)
    robust = dict(num_malicious_nodes=settings.malicious_sites)
    name = settings.strategy
    if name == "fedavg":
        return flower.FedAvg(**common)
    if name == "fedavgm":
        return flower.FedAvgM(
            **common,
            server_learning_rate=settings.server_lr,
            server_momentum=settings.server_momentum,
        )
    if name == "fedprox":
        return flower.FedProx(**common, proximal_mu=settings.proximal_mu)
    if name == "fedadam":
        return flower.FedAdam(**common, **fedopt, **moments)
    if name == "fedyogi":
        return flower.FedYogi(**common, **fedopt, **moments)
    if name == "fedadagrad":
        return flower.FedAdagrad(**common, **fedopt)
    if name == "fedmedian":
        return flower.FedMedian(**common)
    if name == "fedtrimmedavg":
        return flower.FedTrimmedAvg(**common, beta=settings.trimmed_beta)
    if name == "krum":
        return flower.Krum(**common, **robust)
    if name == "multikrum":
        return flower.MultiKrum(**common, **robust, num_nodes_to_select=settings.krum_select)
    if name == "bulyan":
        return flower.Bulyan(**common, **robust)
    raise ValueError(f"run-config 'strategy' {name!r} is not one of the known strategies")


def build_strategy(settings: FederationSettings) -> AdapterStrategy:
    """The guarded strategy the server runs: ``settings.strategy``, inside Flower's DP
    wrapper when ``settings.dp`` asks for it."""
    from fedrag_flower.federation.privacy import with_privacy

    strategy = with_privacy(flower_strategy(settings), settings)
    return AdapterStrategy(
        strategy,
        trained_prefixes=settings.trained_prefixes,
        min_sites=settings.min_sites,
        norm_factor=settings.norm_factor,
        equal_weights=settings.dp != "none",
        frozen_a=settings.lora_freeze_a,
    )


# -- resumable state ----------------------------------------------------------------------

# attribute -> "dict" (name -> ndarray) or "list" (ndarrays). FedAvgM's and FedOpt's
# ``current_arrays`` are not saved: both are set from the arrays the round starts from,
# which a resumed run takes from its checkpoint.
_ARRAY_STATE = {"m_t": "dict", "v_t": "dict", "momentum_vector": "list"}


def strategy_state(strategy: AdapterStrategy) -> tuple[dict, dict[str, np.ndarray]]:
    """What a resumed run needs to continue the same strategy: ``(json_state, arrays)``.

    Arrays: FedOpt's moments ``m_t``/``v_t``, FedAvgM's momentum.
    JSON: the DP accountant's ``state_dict()``.
    """
    inner, wrapper = _unwrapped(strategy)
    arrays: dict[str, np.ndarray] = {}
    for attribute, kind in _ARRAY_STATE.items():
        value = getattr(inner, attribute, None)
        if value is None:
            continue
        if kind == "dict":
            arrays |= {f"{attribute}/{k}": np.asarray(v) for k, v in value.items()}
        else:
            arrays |= {f"{attribute}/{i:05d}": np.asarray(v) for i, v in enumerate(value)}
    state: dict = {"strategy": type(inner).__name__}
    accountant = getattr(wrapper, "accountant", None)
    if accountant is not None:
        state["accountant"] = accountant.state_dict()
    return state, arrays


def load_strategy_state(strategy: AdapterStrategy, state: dict, arrays: dict) -> None:
    """Put back what ``strategy_state`` returned (same strategy class, else an error)."""
    inner, wrapper = _unwrapped(strategy)
    if state.get("strategy") != type(inner).__name__:
        raise ValueError(
            f"the checkpoint was written by strategy {state.get('strategy')!r}, this run "
            f"uses {type(inner).__name__!r}: resume with the run's own 'strategy'"
        )
    for attribute, kind in _ARRAY_STATE.items():
        prefix = f"{attribute}/"
        items = sorted((k[len(prefix) :], v) for k, v in arrays.items() if k.startswith(prefix))
        if not items:
            continue
        if kind == "dict":
            setattr(inner, attribute, {k: v for k, v in items})
        else:
            setattr(inner, attribute, [v for _, v in items])
    if "accountant" in state and getattr(wrapper, "accountant", None) is not None:
        wrapper.accountant.load_state_dict(state["accountant"])


def _unwrapped(strategy: AdapterStrategy):
    """(the Flower aggregation strategy, its DP wrapper or None)."""
    inner = strategy.strategy
    if isinstance(inner, flower.Strategy) and hasattr(inner, "strategy"):
        return inner.strategy, inner
    return inner, None
