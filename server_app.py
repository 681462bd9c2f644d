"""ServerApp: FedAvg over the sites' LoRA adapters; saves the shared fine-tuned RAG system."""

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedrag_flower.federation.server import (
    AdapterFedAvg,
    RunOutputs,
    initial_arrays,
    server_rag_system,
)
from fedrag_flower.federation.settings import FederationSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FederationSettings.from_run_config(context.run_config)

    # Seeded initial adapters: the same on the server and every site.
    rag_system = server_rag_system(settings)
    outputs = RunOutputs(settings, rag_system, context.run_config)
    print(f"fedrag-flower: writing this run to {outputs.folder}", flush=True)

    strategy = AdapterFedAvg(
        fraction_train=settings.fraction_train,
        fraction_evaluate=settings.fraction_evaluate,
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(rag_system),
        num_rounds=settings.num_server_rounds,
        train_config=ConfigRecord({"mode": settings.mode}),
        evaluate_fn=outputs.checkpoint,
    )

    final = outputs.save_final(result, strategy)
    print(f"fedrag-flower: shared fine-tuned RAG system saved to {final}", flush=True)
    print(f'fedrag-flower: ask it: fedrag-flower ask --system {final} "your question"', flush=True)
