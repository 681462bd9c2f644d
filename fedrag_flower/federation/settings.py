"""The run configuration, read once from Flower's ``run_config`` into typed settings."""

from __future__ import annotations

from dataclasses import dataclass, fields

from fedrag_flower.models import PACKAGED_GENERATOR, PACKAGED_RETRIEVER
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.rag.system import RAGConfig
from fedrag_flower.trainers.huggingface.lsr import LSRTrainingArgs
from fedrag_flower.trainers.huggingface.ralt import RALT_CONTEXTS, RALTTrainingArgs

MODES = ("ralt", "lsr", "ralt+lsr")
STRATEGIES = (
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
)
DP_MODES = ("none", "client-fixed", "server-fixed")


@dataclass
class FederationSettings:
    """Everything a run is configured by; field ``x_y`` is run-config key ``x-y``.

    Attributes:
        num_server_rounds: FedAvg rounds.
        mode: what each site trains per round: ``ralt`` (generator adapter), ``lsr``
            (retriever query adapter) or ``ralt+lsr`` (RALT, then LSR).
        local_epochs: passes over the site's training pairs per round.
        lsr_epochs: LSR passes per local epoch. LSR's LM targets are computed once per
            round and cached, so each extra pass costs only the query encoder's steps
            (about a second for 24 queries), not LM scoring.
        local_steps: if > 0, at most this many optimizer steps per trainer per round.
        pairs_per_round: if > 0, each round trains on this many of the site's pairs,
            drawn without replacement and cycling through them round by round.
        lr_generator / lr_retriever: AdamW learning rates of the two adapters.
        lr_round_decay: both learning rates are multiplied by this once per round after
            the first (round r trains at lr x decay^(r-1)); 1.0 keeps them constant.
        batch_size: RALT examples per step (a pair gives one when ``ralt_context`` is
            joined, ``top_k`` when parallel); lsr_batch_size: LSR queries per step.
        max_tokens_per_pass: RALT runs a step's examples through the model in passes of
            at most this many padded tokens, gradients accumulated: the same step. Each
            token of a pass holds ~1.3 MB of activations (SmolLM2-135M, bf16 autocast), so
            this bounds a site's peak memory; one joined example per pass (384) takes
            ~0.9 GB less than 1024, and trains ~15-25 % slower on 2 cores.
        lora_r / lora_alpha / lora_dropout: generator LoRA; retriever_lora_r/alpha: the
            query adapter's.
        adapt_chunks: (default on) the retriever's adapter encodes the chunks too, and LSR
            trains it through both the queries and the candidate chunks (REPLUG's retriever
            training with re-indexing, instead of RA-DIT's query side only): each site re-encodes
            its knowledge store whenever the adapter changes (once per round and site
            after loading the global adapters, once after LSR; ~3 s for the default 503
            chunks on 2 cores, minutes per round at 100k chunks), and the saved system's
            store holds the adapted embeddings. Each LSR step also encodes its candidates
            through the adapter (~8x the retriever's work per query).
        lora_targets: the generator's adapted layers, comma-separated names ("": the
            attention projections q/k/v/o of Llama-style models).
        lora_freeze_a: (default on) keep both adapters' A matrices at their seeded
            initialisation and train B alone (FFA-LoRA, Sun et al., ICLR 2024): sites send
            only B (0.49 % of the default weights instead of 1.2 %; the same quality on the
            validation slice and the comparison, README), and FedAvg of B over a shared A
            is the exact mean of the sites' updates (under ``dp = "client-fixed"`` too: B alone is
            clipped, A adds nothing to the update).
        top_k: chunks retrieved per query for RALT; lsr_top_k: LSR candidates.
        ralt_context: ``joined`` (one RALT example per pair, its top_k chunks in one
            prompt; the default, not RA-DIT's objective) or ``parallel`` (RA-DIT's: one
            example per chunk). See ``fedrag_flower.trainers.huggingface.ralt``.
        ralt_supported_only: RALT trains only on the pairs whose retrieved chunks hold a
            gold chunk (pairs without gold ids always train); a changed objective, see
            ``RALTTrainingArgs.supported_only``.
        context_k: chunks in the prompt the system answers (and is evaluated) with; 0 (the
            default) means top_k, so joined training trains on the prompts the system
            answers with. The saved system keeps it.
        lsr_gamma / lsr_beta: retrieval and LM temperatures of LSR.
        lsr_gold_candidate: (default on) a training query whose gold chunk was not
            retrieved among its ``lsr_top_k`` candidates gets it as its last candidate
            (where the site's rows have gold ids; others train as before); a changed
            objective, see ``LSRTrainingArgs.gold_candidate``.
        max_length: longest prompt + response in tokens.
        fraction_train / fraction_evaluate: fraction of connected sites sampled per round.
        min_sites: minimum number of sites to train and evaluate with, and to wait for.
        partitioning: how simulation splits the default data: ``category`` (non-IID, whole
            categories per site) or ``iid``.
        default_data: which default data simulated sites get: ``faq`` (one answer per
            chunk) or ``passages`` (each category's answers joined into passages of 3-5; the
            generator must find the answer in its passage).
        eval_generate: test questions per site answered by generation at evaluation
            (0: all); NLL and recall always use all of them.
        generator_model / retriever_model: base models (hub id, path, or packaged).
        server_corpus: corpus the saved system is packaged with: ``default`` (embedded
            FAQ), a file path, or ``none``.
        output_dir: where each run's folder is created.
        seed: seeds adapters' initialisation, data partitioning and batch order.
        strategy: how the server aggregates, each Flower 1.42's own class: ``fedavg``,
            ``fedavgm``, ``fedprox``, ``fedadam``, ``fedyogi``, ``fedadagrad``, or the
            robust ``fedmedian``, ``fedtrimmedavg``, ``krum``, ``multikrum``, ``bulyan``.
        server_lr / server_momentum: FedAvgM's server step on the averaged update
            (1.0 and 0.0: plain FedAvg).
        fedopt_eta / fedopt_beta_1 / fedopt_beta_2 / fedopt_tau: FedAdam, FedYogi and
            FedAdagrad's server learning rate, moment decays and adaptivity.
        proximal_mu: FedProx's mu, sent to the sites as ``proximal-mu``.
        trimmed_beta: FedTrimmedAvg's fraction cut from each end, in [0, 0.5).
        malicious_sites: sites Krum, MultiKrum and Bulyan assume may be malicious.
        krum_select: updates MultiKrum averages.
        norm_factor: an update whose norm exceeds this many times the median of the
            other sites' is rejected (0: no norm check); see ``update_checks``.
        round_timeout: seconds the server waits for the sites' replies in a round; a
            site that has not answered by then is recorded as ``timeout``.
        resume_from: a run folder to continue from its last complete checkpoint ("": a
            new run).
        dp: differential privacy: ``none``, ``client-fixed`` (each site clips its update,
            Flower's ``fixedclipping_mod``) or ``server-fixed`` (the server clips);
            either way the server adds Gaussian noise to the mean.
        dp_noise: noise multiplier z (noise std on the mean: z * dp_clip / sampled sites).
        dp_clip: clipping norm C of each site's update (L2 over all adapter tensors).
        dp_sampled_sites: sites sampled each round (0: min-sites); the accountant counts
            every round as a release over this many sites, with no sampling amplification.
        dp_delta: the delta at which the spent epsilon is reported.
        store_backend: each site's knowledge store: ``faiss`` (exact), ``faiss-hnsw`` or
            ``faiss-ivf`` (approximate, for large corpora), ``qdrant`` (embedded, or the
            server at ``store_url``); see ``fedrag_flower.rag.store_backends``.
        store_url: a Qdrant server's URL for ``store_backend = "qdrant"`` ('' = embedded).
        tracking: also log each round's metrics, live, to an experiment tracker in the run
            folder: ``none``, ``tensorboard`` or ``mlflow``
            (``fedrag_flower.federation.tracking``).
    """

    num_server_rounds: int = 2
    mode: str = "ralt+lsr"
    local_epochs: int = 1
    lsr_epochs: int = 2
    local_steps: int = 0
    pairs_per_round: int = 45
    lr_generator: float = 1e-3
    lr_retriever: float = 1e-3
    lr_round_decay: float = 1.0
    batch_size: int = 3
    lsr_batch_size: int = 4
    max_tokens_per_pass: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = ""
    lora_freeze_a: bool = True
    retriever_lora_r: int = 8
    retriever_lora_alpha: int = 16
    adapt_chunks: bool = True
    top_k: int = 3
    ralt_context: str = "joined"
    ralt_supported_only: bool = False
    context_k: int = 0
    lsr_top_k: int = 8
    lsr_gamma: float = 0.05
    lsr_beta: float = 0.1
    lsr_gold_candidate: bool = True
    max_length: int = 384
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_sites: int = 2
    partitioning: str = "category"
    default_data: str = "faq"
    eval_generate: int = 4
    generator_model: str = PACKAGED_GENERATOR
    retriever_model: str = PACKAGED_RETRIEVER
    server_corpus: str = "default"
    output_dir: str = "outputs"
    seed: int = 0
    strategy: str = "fedavg"
    server_lr: float = 1.0
    server_momentum: float = 0.0
    fedopt_eta: float = 0.01
    fedopt_beta_1: float = 0.9
    fedopt_beta_2: float = 0.99
    fedopt_tau: float = 0.001
    proximal_mu: float = 0.01
    trimmed_beta: float = 0.2
    malicious_sites: int = 0
    krum_select: int = 2
    norm_factor: float = 10.0
    round_timeout: float = 3600.0
    resume_from: str = ""
    dp: str = "none"
    dp_noise: float = 1.0
    dp_clip: float = 1.0
    dp_sampled_sites: int = 0
    dp_delta: float = 1e-5
    store_backend: str = "faiss"
    store_url: str = ""
    tracking: str = "none"

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederationSettings:
        """Typed settings from Flower's run config (keys with dashes); unknown keys and
        values of the wrong type are errors that name the key."""
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(
                    f"unknown run-config key '{key}'; known keys: "
                    + ", ".join(sorted(k.replace("_", "-") for k in known))
                )
            kind = type(getattr(cls, name))
            try:
                values[name] = kind(value) if kind is not bool else _as_bool(value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"run-config key '{key}' must be {kind.__name__}, got {value!r}"
                ) from None
        settings = cls(**values)
        if settings.mode not in MODES:
            raise ValueError(f"run-config 'mode' must be one of {MODES}, got {settings.mode!r}")
        settings.check_ranges()
        return settings

    def check_ranges(self) -> None:
        """Raise a ``ValueError`` naming the run-config key and what it allows for the
        first value out of range (server-side keys)."""
        choices = {"strategy": STRATEGIES, "dp": DP_MODES, "ralt_context": RALT_CONTEXTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"run-config '{_key(name)}' must be one of {allowed}, "
                    f"got {getattr(self, name)!r}"
                )
        rules = [
            ("num_server_rounds", self.num_server_rounds >= 1, ">= 1"),
            ("min_sites", self.min_sites >= 1, ">= 1"),
            ("max_tokens_per_pass", self.max_tokens_per_pass >= 1, ">= 1"),
            ("lr_round_decay", 0 < self.lr_round_decay <= 1, "in (0, 1]"),
            ("context_k", 0 <= self.context_k <= self.top_k, f"in [0, top-k = {self.top_k}]"),
            ("fraction_train", 0 < self.fraction_train <= 1, "in (0, 1]"),
            ("fraction_evaluate", 0 <= self.fraction_evaluate <= 1, "in [0, 1]"),
            ("server_lr", self.server_lr > 0, "> 0"),
            ("server_momentum", 0 <= self.server_momentum < 1, "in [0, 1)"),
            ("fedopt_eta", self.fedopt_eta > 0, "> 0"),
            ("fedopt_beta_1", 0 <= self.fedopt_beta_1 < 1, "in [0, 1)"),
            ("fedopt_beta_2", 0 <= self.fedopt_beta_2 < 1, "in [0, 1)"),
            ("fedopt_tau", self.fedopt_tau > 0, "> 0"),
            ("proximal_mu", self.proximal_mu >= 0, ">= 0"),
            ("trimmed_beta", 0 <= self.trimmed_beta < 0.5, "in [0, 0.5)"),
            ("malicious_sites", self.malicious_sites >= 0, ">= 0"),
            ("krum_select", self.krum_select >= 1, ">= 1"),
            ("norm_factor", self.norm_factor == 0 or self.norm_factor > 1, "0 (off) or > 1"),
            ("round_timeout", self.round_timeout > 0, "> 0 seconds"),
            ("dp_noise", self.dp_noise > 0, "> 0"),
            ("dp_clip", self.dp_clip > 0, "> 0"),
            ("dp_sampled_sites", self.dp_sampled_sites >= 0, ">= 0 (0: min-sites)"),
            ("dp_delta", 0 < self.dp_delta < 1, "in (0, 1)"),
        ]
        for name, ok, allowed in rules:
            if not ok:
                raise ValueError(
                    f"run-config '{_key(name)}' must be {allowed}, got {getattr(self, name)!r}"
                )
        if self.dp != "none" and self.strategy not in ("fedavg", "fedprox"):
            raise ValueError(
                f"run-config 'dp' = {self.dp!r} needs strategy 'fedavg' or 'fedprox' (the "
                f"accountant's noise calibration assumes a plain mean), got {self.strategy!r}"
            )

    @property
    def trained_prefixes(self) -> tuple[str, ...]:
        """The adapter key prefixes the sites train each round."""
        return tuple(
            prefix
            for prefix, on in (
                ("generator.", self.trains_generator),
                ("retriever.", self.trains_retriever),
            )
            if on
        )

    @property
    def trains_generator(self) -> bool:
        return "ralt" in self.mode.split("+")

    @property
    def trains_retriever(self) -> bool:
        return "lsr" in self.mode.split("+")

    def generator_lora(self) -> LoraSettings:
        targets = [name.strip() for name in self.lora_targets.split(",") if name.strip()]
        return LoraSettings(
            self.lora_r,
            self.lora_alpha,
            self.lora_dropout,
            targets,
            seed=self.seed,
            train_a=not self.lora_freeze_a,
        )

    def retriever_lora(self) -> LoraSettings:
        return LoraSettings(
            self.retriever_lora_r,
            self.retriever_lora_alpha,
            0.0,
            seed=self.seed,
            train_a=not self.lora_freeze_a,
        )

    def rag_config(self) -> RAGConfig:
        context_k = self.context_k or self.top_k
        return RAGConfig(top_k=self.top_k, context_k=context_k, max_length=self.max_length)

    def ralt_args(self, server_round: int) -> RALTTrainingArgs:
        return RALTTrainingArgs(
            epochs=self.local_epochs,
            learning_rate=self.lr_generator * self.lr_round_decay ** (server_round - 1),
            batch_size=self.batch_size,
            context=self.ralt_context,
            supported_only=self.ralt_supported_only,
            max_tokens_per_pass=self.max_tokens_per_pass,
            max_steps=self.local_steps or None,
            proximal_mu=self.proximal_mu if self.strategy == "fedprox" else 0.0,
            seed=self.seed + server_round,
            progress=False,
        )

    def lsr_args(self, server_round: int) -> LSRTrainingArgs:
        return LSRTrainingArgs(
            epochs=self.local_epochs * self.lsr_epochs,
            learning_rate=self.lr_retriever * self.lr_round_decay ** (server_round - 1),
            batch_size=self.lsr_batch_size,
            top_k=self.lsr_top_k,
            gamma=self.lsr_gamma,
            beta=self.lsr_beta,
            gold_candidate=self.lsr_gold_candidate,
            max_steps=self.local_steps or None,
            proximal_mu=self.proximal_mu if self.strategy == "fedprox" else 0.0,
            seed=self.seed + server_round,
            progress=False,
        )


def _key(name: str) -> str:
    return name.replace("_", "-")


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)
