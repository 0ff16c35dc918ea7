"""Where glance 1 looks: statistics (`stats`), figures (`figures`), the `analyze` run (`analyze`), the HTML
report (`report`) and their subcommands (`commands`: analyze, report, predict)."""
from .analyze import analyze_run
from .stats import Looks, WeightStats, collect, localisation, normalized_weights, weight_stats

__all__ = ["analyze_run", "Looks", "WeightStats", "collect", "localisation", "normalized_weights", "weight_stats"]
