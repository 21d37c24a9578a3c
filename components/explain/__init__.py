"""Why a model recommends what it does: counterfactual-deletion influence of history
events (:mod:`components.explain.influence`) and model-level summaries of it
(:mod:`components.explain.report`). Pure library code: no Prefect, no services."""
