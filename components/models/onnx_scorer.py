"""The serving ranking exported to ONNX and run by ONNX Runtime (``serve.scorer: onnx``).

The export records :class:`components.models.compiled.RankAll` (the model's own
``score_all`` and the top-k ranking) with the TorchScript-based exporter: 0.4-0.5 s for
the bench's SASRec, against 16 s for the dynamo exporter, which would dominate a deploy's
start. Batch, history length, banned items and ``k`` stay dynamic, so one graph serves
every request. ONNX Runtime runs it in one CPU session with graph optimisations on,
fusing what the eager model runs as dozens of small dispatched ops: 140-160 us per
3-item request for that SASRec's scores at 12,101 items, against 330 us for the frozen
trace (components/models/compiled.py checks the result against the model and falls back
to the trace when it does not stand for it).

The graph is exported once, when the model version is registered (:func:`store_graph`,
called by the registry): checked there against the model, and stored beside the weights
with their digest, so a process start or hot swap only opens it (and checks it again on
the probes, a few ms); a version registered without one, or whose weights differ from the
digest, is exported at load as before.

CPU only: the ``onnxruntime`` wheel has no CUDA provider, so a CUDA deployment serves the
trace (recorded on its own device).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from components.models.base import Recommender
from components.models.compiled import (
    PROBE_SHAPES,
    RankAll,
    RankCall,
    Unservable,
    fill_eval_caches,
    mismatch,
    probe,
    probe_k,
    raise_on_tracer_warning,
)

log = logging.getLogger(__name__)

OPSET = 17
INPUTS = ("histories", "exclude", "width", "events")
#: the serving graph and its record, beside a registered model's weights (store_graph)
GRAPH_FILE = "serving.onnx"
RECORD_FILE = "serving.json"


def onnx_call(
    model: Recommender, with_events: bool, device: torch.device, stored: Path | None = None
) -> tuple[RankCall, str]:
    """``(run, note)``: ``run(histories, exclude, k, events) -> (items, scores)`` through an
    ONNX Runtime session of ``model`` (one intra-op thread per torch thread), and where its
    graph came from. The graph :func:`store_graph` wrote into ``stored`` is opened when it
    was recorded from these weights (a refusal recorded there is final); otherwise it is
    exported now. :class:`Unservable` when this machine or model cannot have one."""
    if device.type != "cpu":
        raise Unservable(f"ONNX Runtime here has no {device.type} provider")
    try:
        import onnxruntime
    except ImportError:
        raise Unservable("onnxruntime is not installed (pip install 'recops[serving]')") from None
    graph, note = _stored_graph(model, with_events, stored), " (graph stored at registration)"
    if graph is None:
        graph, note = ort_compatible(export(model, with_events)), " (graph exported at load)"
    session = onnxruntime.InferenceSession(
        graph, _options(onnxruntime, torch.get_num_threads()), providers=["CPUExecutionProvider"]
    )
    return _session_call(session, with_events), note


def store_graph(model: Recommender, with_events: bool, directory: Path) -> str | None:
    """Export ``model``'s serving graph once, check it against the model on the probes,
    and write it (:data:`GRAPH_FILE`) with its record (:data:`RECORD_FILE`: the weights'
    digest, and the refusal when it does not stand for the model) into ``directory``,
    so serving opens it instead of exporting (0.4-1 s per process start or hot swap).
    Returns the refusal (None when the graph was written); writes nothing on a machine
    without ONNX Runtime or for a model off the CPU, where serving decides at load."""
    if next(iter(model.parameters()), torch.empty(0)).device.type != "cpu":
        return "the model is not on the CPU"
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    cpu, training = torch.device("cpu"), model.training
    model.eval()
    graph = b""
    try:
        fill_eval_caches(model, with_events, cpu)
        graph = ort_compatible(export(model, with_events))
        session = onnxruntime.InferenceSession(
            graph, _options(onnxruntime, 1), providers=["CPUExecutionProvider"]
        )
        refused = mismatch(model, _session_call(session, with_events), with_events, cpu)
    except Unservable as exc:
        refused = str(exc)
    except Exception as exc:  # a model the exporter cannot record: serving takes the trace
        refused = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        model.train(training)
    if refused is None:
        (directory / GRAPH_FILE).write_bytes(graph)
    record = {
        "format": 1,
        "weights": weights_digest(model),
        "with_events": with_events,
        "opset": OPSET,
        "refused": refused,
    }
    (directory / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return refused


def _stored_graph(model: Recommender, with_events: bool, stored: Path | None) -> bytes | None:
    """The graph :func:`store_graph` wrote into ``stored`` for exactly these weights (None
    when there is none or it was recorded from others: it is then exported again);
    :class:`Unservable` when the export was refused there."""
    if stored is None:
        return None
    try:
        record = json.loads((stored / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("with_events") != with_events
        or record.get("weights") != weights_digest(model)
    ):
        log.warning("the stored serving graph in %s is not this model's: exporting", stored)
        return None
    if record.get("refused"):
        raise Unservable(f"{record['refused']} (checked at registration)")
    try:
        return (stored / GRAPH_FILE).read_bytes()
    except OSError:
        return None


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over ``model``'s state dict (names, dtypes, shapes and bytes, in name
    order): which weights a stored graph was recorded from (a few ms per 10 MB)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def export(model: Recommender, with_events: bool) -> bytes:
    """The ONNX graph of :class:`RankAll` over ``model``, every dimension dynamic but the
    catalogue (recorded on a 2 x 7 probe, so no dimension is specialised to 1)."""
    inputs = probe(model, *PROBE_SHAPES[2], seed=0, device=torch.device("cpu")).inputs(
        probe_k(model), with_events
    )
    names = list(INPUTS[: len(inputs)])
    dynamic: dict[str, dict[int, str]] = {
        "histories": {0: "batch", 1: "length"},
        "exclude": {0: "batch", 1: "banned"},
        "width": {0: "k"},
        "events": {0: "batch", 1: "length"},
        "items": {0: "batch", 1: "k"},
        "scores": {0: "batch", 1: "k"},
    }
    with (
        tempfile.TemporaryDirectory(prefix="recops-onnx-") as scratch,
        warnings.catch_warnings(record=True) as caught,
        torch.no_grad(),
    ):
        path = Path(scratch) / "rank.onnx"
        warnings.simplefilter("always")
        torch.onnx.export(
            RankAll(model, with_events).eval(),
            inputs,
            path,
            dynamo=False,
            input_names=names,
            output_names=["items", "scores"],
            dynamic_axes={name: dynamic[name] for name in [*names, "items", "scores"]},
            opset_version=OPSET,
        )
        graph = path.read_bytes()
    raise_on_tracer_warning(caught)
    return graph


def ort_compatible(graph: bytes) -> bytes:
    """``graph`` with the ops ONNX Runtime's CPU kernels lack rewritten: ``EyeLike`` over
    booleans (``torch.eye(n, dtype=bool)`` in an attention mask) becomes float ``EyeLike``
    between two casts."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(graph)
    types = _value_types(model)
    nodes = []
    for node in model.graph.node:
        if node.op_type == "EyeLike" and types.get(node.output[0]) == TensorProto.BOOL:
            source, target = node.input[0], node.output[0]
            nodes.append(helper.make_node("Cast", [source], [f"{source}__f"], to=TensorProto.FLOAT))
            eye = helper.make_node("EyeLike", [f"{source}__f"], [f"{target}__f"])
            eye.attribute.append(helper.make_attribute("dtype", TensorProto.FLOAT))
            nodes += [
                eye,
                helper.make_node("Cast", [f"{target}__f"], [target], to=TensorProto.BOOL),
            ]
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return bytes(model.SerializeToString())


def _value_types(model: Any) -> dict[str, int]:
    """Element type of every named value in ``model`` (ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model).graph
    values = [*inferred.value_info, *inferred.input, *inferred.output]
    return {v.name: int(v.type.tensor_type.elem_type) for v in values}


def _options(onnxruntime: Any, threads: int) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # threads that spin-wait on descheduled siblings cost latency on a shared machine (the
    # same reason serve.cpu_threads defaults to one)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


def _session_call(session: Any, with_events: bool) -> RankCall:
    """The session as a call on CPU tensors (they cross as numpy views, no copy)."""
    widths: dict[int, np.ndarray] = {}  # k -> a [k] array (its shape is the graph's k)

    def run(
        histories: Tensor, exclude: Tensor, k: int, events: Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        width = widths.get(k)
        if width is None:
            width = widths[k] = np.zeros(k, dtype=np.int64)
        feed = {"histories": histories.numpy(), "exclude": exclude.numpy(), "width": width}
        if with_events and events is not None:
            feed["events"] = events.numpy()
        items, scores = session.run(None, feed)
        return items, scores

    return run
