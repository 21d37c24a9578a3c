"""The retrain flow's online step against a real (ephemeral) Prefect server: the run
pauses, resumes by itself when the observation window ends, and concludes - here on a
workspace with no challenger attached, so the conclusion is the one-line refusal."""

from __future__ import annotations

from prefect import get_client

from components.workspace import Workspace
from flows.online import online_decision_flow


def test_a_paused_online_step_resumes_by_timeout_and_concludes(workspace: Workspace) -> None:
    mapping = {
        "workspace": str(workspace.root),
        "deploy": {"target": "local", "challenger": {"observe_s": 2, "poll_s": 1}},
    }
    state = online_decision_flow(config=mapping, actor="test", return_state=True)
    assert state.is_failed()
    assert "no shadow or canary is attached" in str(state.message) + repr(state.data)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
        history = client.read_flow_run_states(run.id)
    names = [s.name for s in history]
    assert "Paused" in names and names.index("Paused") < len(names) - 1, names
    assert history[-1].is_failed()
