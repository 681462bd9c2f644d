"""ServerApp: aggregates the sites' LoRA adapters round by round; saves the shared
fine-tuned RAG system. Strategy, validation, DP, checkpoints and resume: see
``fedrag_flower/federation/`` (strategies, adapter_strategy, run_folder)."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrag_flower.federation.adapter_strategy import TooFewSitesError
from fedrag_flower.federation.faults import server_exit_hook
from fedrag_flower.federation.reporting import learning_table
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.run_folder import RunFolder
from fedrag_flower.federation.server import server_rag_system
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = FederationSettings.from_run_config(context.run_config)

    # Seeded initial adapters: the same on the server and every site.
    rag_system = server_rag_system(settings)
    strategy = build_strategy(settings)
    if settings.resume_from:
        run = RunFolder.resume(
            settings.resume_from, settings, rag_system, strategy, context.run_config
        )
        print(f"fedrag-flower: resuming {run.folder} at round {run.next_round}", flush=True)
    else:
        run = RunFolder.create(settings, rag_system, strategy, context.run_config)
    print(f"fedrag-flower: writing this run to {run.folder}", flush=True)

    try:
        arrays = run_rounds(
            strategy,
            grid,
            run.arrays,
            num_rounds=settings.num_server_rounds,
            first_round=run.next_round,
            timeout=settings.round_timeout,
            train_config={"mode": settings.mode},
            hooks=[h for h in (run.end_of_round, server_exit_hook()) if h],
        )
    except TooFewSitesError as error:
        run.record_stop(error)
        print(f"fedrag-flower: {error}", flush=True)
        print(
            f"fedrag-flower: last complete checkpoint: {run.stops[-1]['last_checkpoint']}; "
            f"continue with --run-config \"resume-from='{run.folder}'\"",
            flush=True,
        )
        raise

    final = run.save_final(arrays)
    if table := learning_table(run.history):
        answers = f"{settings.eval_generate} per site" if settings.eval_generate else "all"
        print(
            "fedrag-flower: the shared system after each round, on the sites' test questions "
            f"(F1 and EM over the answers generated: {answers}):"
        )
        print(table, flush=True)
    print(f"fedrag-flower: shared fine-tuned RAG system saved to {final}", flush=True)
    print(f'fedrag-flower: ask it: fedrag-flower ask --system {final} "your question"', flush=True)
