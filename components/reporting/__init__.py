"""The run report: one self-contained HTML page (and PNG plots) per retrain run."""
