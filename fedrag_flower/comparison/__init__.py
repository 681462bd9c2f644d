"""Does joining the federation pay? The same base models, budget of optimizer steps per
training pair and held-out questions for: the untrained system, each site alone, the
federated system (the run config's strategy, FedAvg by default, optionally with DP) and a
centralized one (all sites' pairs pooled).

    from fedrag_flower.comparison import ComparisonOptions, run_comparison
    run_comparison(ComparisonOptions(seeds=(0, 1, 2), num_sites=3))

or ``fedrag-flower compare`` on the command line.
"""

from fedrag_flower.comparison.run import ComparisonOptions, run_comparison

__all__ = ["ComparisonOptions", "run_comparison"]
