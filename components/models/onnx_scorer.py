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

A single request (batch 1, the common case at low concurrency) is answered by a
fixed-shape twin of the session once one is ready (:class:`StaticShapes`: its history
and banned items padded to a bucket width, one session per shape and ``k``, built in the
background and kept only when it answers as the dynamic session): ONNX Runtime plans a
fixed-shape graph once instead of per call, 25-30 % of ``Engine.score`` at both 40 and
12,101 items.

CPU only: the ``onnxruntime`` wheel has no CUDA provider, so a CUDA deployment serves the
trace (recorded on its own device).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import threading
import warnings
import weakref
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
    answer_differs,
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
    graph, note = stored_graph(model, with_events, stored), " (graph stored at registration)"
    if graph is None:
        graph, note = ort_compatible(export(model, with_events)), " (graph exported at load)"
    threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(
        graph, _options(onnxruntime, threads), providers=["CPUExecutionProvider"]
    )
    static = (
        StaticShapes(graph, onnxruntime, threads) if model.n_items <= MAX_STATIC_ITEMS else None
    )
    run = _session_call(session, with_events, static)
    _STATIC[run] = static
    return run, note


#: each session call's static-shape twins (None: none for this catalogue size)
_STATIC: weakref.WeakKeyDictionary[RankCall, StaticShapes | None] = weakref.WeakKeyDictionary()


def arm(run: RankCall) -> None:
    """Let ``run`` (an :func:`onnx_call`) build fixed-shape twins for single requests from
    now on: called once the scorer has passed its check, so the check's probes do not."""
    static = _STATIC.get(run)
    if static is not None:
        static.armed = True


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
    write_stored(directory, model, with_events, graph, refused)
    return refused


def write_stored(
    directory: Path,
    model: Recommender,
    with_events: bool,
    graph: bytes,
    refused: str | None,
    files: tuple[str, str] = (GRAPH_FILE, RECORD_FILE),
) -> None:
    """Write ``graph`` (unless ``refused``) and its record (the weights' digest, the
    refusal) into ``directory`` as ``files`` (graph, record): the serving graph's by
    default, also the explanation path's deletion graph (components/explain/compiled.py)."""
    graph_file, record_file = files
    if refused is None:
        (directory / graph_file).write_bytes(graph)
    record = {
        "format": 1,
        "weights": weights_digest(model),
        "with_events": with_events,
        "opset": OPSET,
        "refused": refused,
    }
    (directory / record_file).write_text(json.dumps(record, indent=2))


def stored_graph(
    model: Recommender,
    with_events: bool,
    stored: Path | None,
    files: tuple[str, str] = (GRAPH_FILE, RECORD_FILE),
) -> bytes | None:
    """The graph :func:`write_stored` wrote into ``stored`` as ``files`` for exactly these
    weights (None when there is none or it was recorded from others: it is then exported
    again); :class:`Unservable` when the export was refused there."""
    if stored is None:
        return None
    graph_file, record_file = files
    try:
        record = json.loads((stored / record_file).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get("with_events") != with_events
        or record.get("weights") != weights_digest(model)
    ):
        log.warning("the stored graph %s in %s is not this model's: exporting", graph_file, stored)
        return None
    if record.get("refused"):
        raise Unservable(f"{record['refused']} (checked at registration)")
    try:
        return (stored / graph_file).read_bytes()
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
    return record_graph(RankAll(model, with_events), inputs, names, ["items", "scores"], dynamic)


def record_graph(
    module: torch.nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
) -> bytes:
    """``module`` (eval mode) recorded into an ONNX graph by the TorchScript-based exporter
    (0.5 s against the dynamo exporter's 16 s), the named axes of ``dynamic`` left dynamic;
    :class:`Unservable` when the recording emits a ``TracerWarning`` (a value read back
    into Python would be frozen into the graph)."""
    with (
        tempfile.TemporaryDirectory(prefix="recops-onnx-") as scratch,
        warnings.catch_warnings(record=True) as caught,
        torch.no_grad(),
    ):
        path = Path(scratch) / "graph.onnx"
        warnings.simplefilter("always")
        torch.onnx.export(
            module.eval(),
            inputs,
            path,
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: dynamic[name] for name in [*input_names, *output_names]},
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


def _session_call(session: Any, with_events: bool, static: StaticShapes | None = None) -> RankCall:
    """The session as a call on CPU tensors (they cross as numpy views, no copy); a single
    request goes to ``static``'s fixed-shape twin of the session once one is ready."""
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
        single = static is not None and static.armed and histories.shape[0] == 1
        if single and static is not None:
            found = static.run(feed)
            if found is not None:
                return found
        items, scores = session.run(None, feed)
        if single and static is not None:
            static.offer(feed, items, scores)
        return items, scores

    return run


#: widths a single request's history and banned items are padded to, one static-shape
#: session per (length, banned, k) seen (ONNX Runtime plans a fixed-shape graph once, not
#: per call: the bench's SASRec call at 40 items went from 130 to 82 us)
BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512)
#: at most this many static sessions, and none above this catalogue size: each holds its
#: own copy of the weights (the item table is most of them)
MAX_STATIC_SESSIONS = 8
MAX_STATIC_ITEMS = 100_000


def bucket(width: int) -> int | None:
    """The smallest of :data:`BUCKETS` holding ``width`` (None beyond the largest)."""
    for size in BUCKETS:
        if width <= size:
            return size
    return None


class StaticShapes:
    """Fixed-shape twins of a dynamic session, for single requests (batch 1).

    A request whose padded shape has no twin yet is answered by the dynamic session, and
    the twin is built on a background thread (nothing on the start-up path, no request
    waits for one); it is kept only when it answers that request as the dynamic session
    did (the same top-k, scores within :data:`~components.models.compiled.TOLERANCE`),
    else that shape stays dynamic. Left padding changes no model's answer (the request
    path already pads a batch to its longest history), and 0 in ``exclude`` bans nothing.
    """

    def __init__(self, graph: bytes, onnxruntime: Any, threads: int) -> None:
        self.graph = graph
        self.onnxruntime = onnxruntime
        self.threads = threads
        self.sessions: dict[tuple[int, int, int], Any] = {}  # None: refused or being built
        self.lock = threading.Lock()
        self.refused: dict[tuple[int, int, int], str] = {}  # shape -> why it stays dynamic
        #: off while the scorer is checked at load: the probes' shapes build no twin then
        #: (no background work on the start-up path); :func:`arm` turns it on
        self.armed = False

    def _key(self, feed: dict[str, np.ndarray]) -> tuple[int, int, int] | None:
        length, banned = bucket(feed["histories"].shape[1]), bucket(feed["exclude"].shape[1])
        if length is None or banned is None:
            return None
        return length, banned, feed["width"].shape[0]

    def run(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
        """The twin's answer for ``feed`` (None when its shape has none ready)."""
        key = self._key(feed)
        session = self.sessions.get(key) if key is not None else None
        if session is None or key is None:
            return None
        items, scores = session.run(None, padded(feed, key))
        return items, scores

    def offer(self, feed: dict[str, np.ndarray], items: np.ndarray, scores: np.ndarray) -> None:
        """Start building the twin for ``feed``'s shape (checked against ``items`` and
        ``scores``, the dynamic session's answer) unless it exists or is refused."""
        key = self._key(feed)
        with self.lock:
            if key is None or key in self.sessions or len(self.sessions) >= MAX_STATIC_SESSIONS:
                return
            self.sessions[key] = None
        thread = threading.Thread(
            target=self._build, args=(key, feed, items, scores), name="onnx-static"
        )  # not a daemon: an interpreter exiting mid-build would abort in ONNX Runtime's C++
        thread.start()

    def _build(
        self, key: tuple[int, int, int], feed: dict[str, np.ndarray], items: Any, scores: Any
    ) -> None:
        length, banned, k = key
        options = _options(self.onnxruntime, self.threads)
        for name, size in (("batch", 1), ("length", length), ("banned", banned), ("k", k)):
            options.add_free_dimension_override_by_name(name, size)
        try:
            session = self.onnxruntime.InferenceSession(
                self.graph, options, providers=["CPUExecutionProvider"]
            )
            got_items, got = session.run(None, padded(feed, key))
        except Exception as exc:  # a shape this graph cannot be planned for: stays dynamic
            log.exception("no static-shape ONNX session for %s", key)
            self.refused[key] = f"failed: {type(exc).__name__}"
            return
        differs = answer_differs(items, scores, got_items, got)
        if differs is None:
            self.sessions[key] = session
        else:
            log.warning("the static-shape ONNX session for %s: %s; kept dynamic", key, differs)
            self.refused[key] = "differs"


def padded(feed: dict[str, np.ndarray], key: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """``feed`` with its history (and event types) left padded to ``key``'s length and its
    banned items right padded to ``key``'s width, with 0."""
    length, banned, _ = key
    out = dict(feed)
    for name in ("histories", "events"):
        if name in feed:
            values = feed[name]
            grown = np.zeros((values.shape[0], length), dtype=values.dtype)
            grown[:, length - values.shape[1] :] = values
            out[name] = grown
    exclude = feed["exclude"]
    wider = np.zeros((exclude.shape[0], banned), dtype=exclude.dtype)
    wider[:, : exclude.shape[1]] = exclude
    out["exclude"] = wider
    return out
