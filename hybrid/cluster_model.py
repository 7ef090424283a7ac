"""The index's model deployed in an OpenSearch cluster (ML Commons), so that the cluster embeds as hybrid does.

Why: a service in Java, Go or Node then sends the query's text (a ``neural`` query) and gets hybrid's
ranking without embedding anything itself, and documents can be embedded by the cluster's ML nodes.

What is deployed is hybrid's own ONNX export of the model (the one its query encoder runs, checked against
torch when made), with a ``tokenizer.json`` that truncates where the model reads and does not pad, zipped as
ML Commons takes it; ML Commons mean-pools (or CLS) and normalises as the model config below says. It is
registered by chunked upload (no URL, no file on a node), deployed, and then checked: the cluster's vectors
of probe sentences must equal ours (cosine at least ``AGREEMENT``), or the model is undeployed and refused.

Hybrid registers its models in model groups it made (named as the model, the description starting with
``MARK``: ML Commons keeps a group's description, not every model's) and never changes a model of another
group. The same package registers once: a re-run finds it by its content hash and only deploys it where it
is not.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from .backends.opensearch import OpenSearchBackend
from .embed import Encoder, Precision
from .errors import HybridError
from .ingest import IngestReport, ingest_documents
from .onnx_encoder import AGREEMENT, PROBES, Manifest, OnnxEncoder, ensure_export
from .sources import read_documents

MARK = "hybrid model:"
"""The start of the description of every model group hybrid made; a model of any other is never touched."""
CHUNK_BYTES = 10_000_000
"""ML Commons' largest upload chunk."""
ML_PLUGIN = "opensearch-ml"
FIXED_ZIP_TIME = (2020, 1, 1, 0, 0, 0)
"""The zip entries' timestamp: the same model always makes the same package, so a re-run finds it."""
NAME_TAKEN = re.compile(r"already being used by a model group with ID: (?P<id>[\w-]+)")
"""ML Commons' refusal of a model group's name that a group has (its id follows)."""
WAIT_S = 300.0
USABLE = ("REGISTERED", "DEPLOYING", "DEPLOYED", "PARTIALLY_DEPLOYED", "UNDEPLOYED")
"""States of a model whose upload completed; any other (REGISTERING, DEPLOY_FAILED) is not reused."""


SETUP_ADVICE = (
    (re.compile(r"enable allow_registering_model_via_local_file"),
     "hybrid uploads the model in chunks, which the cluster setting "
     "plugins.ml_commons.allow_registering_model_via_local_file: true allows"),
    (re.compile(r"no eligible node", re.IGNORECASE),
     "no node may run models: give some the ml role, or set plugins.ml_commons.only_run_on_ml_node: false"),
    (re.compile(r"failed to (save|load|download) pytorch|pytorch native librar", re.IGNORECASE),
     "the nodes could not load PyTorch's native libraries, which ML Commons downloads on first use: without the "
     "internet, point each node at them with -DPYTORCH_LIBRARY_PATH (as docker/opensearch-node.sh --neural does)"),
)
"""ML Commons' words where a cluster's default settings or a closed network stop it, and what the operator
changes: said after them, so a user need not know ML Commons' settings to act."""


class NoMlCommonsError(HybridError):
    """The cluster has no ML Commons plugin, so it cannot run models."""


@dataclass(frozen=True)
class Package:
    """A model zipped as ML Commons registers it, with what its register request says of it."""

    name: str
    content: bytes
    sha256: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Deployment:
    """A model deployed in the cluster, and how closely its vectors match hybrid's."""

    model_id: str
    name: str
    registered_now: bool
    least_cosine: float
    mean_cosine: float


def package(model: str, precision: Precision = "fp32") -> Package:
    """``model``'s ONNX export as ML Commons wants it: one ``.onnx`` and ``tokenizer.json`` at the root."""
    folder = ensure_export(model, precision)
    manifest = Manifest.read(folder)
    if manifest.prompt:
        raise HybridError(f"{model} prefixes a prompt to every text, which ML Commons cannot do: embed on the client")
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("model.onnx", FIXED_ZIP_TIME), _onnx_bytes(folder / manifest.onnx_file))
        archive.writestr(zipfile.ZipInfo("tokenizer.json", FIXED_ZIP_TIME), _tokenizer_json(folder, manifest))
    data = content.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    # ML Commons sends token_type_ids only to a bert or albert graph: the model's own type says which it is.
    model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", "bert")
    config = {"model_type": model_type, "embedding_dimension": manifest.dimension,
              "framework_type": "sentence_transformers", "pooling_mode": manifest.pooling,
              "normalize_result": True}
    return Package(f"hybrid/{Path(manifest.model).name}/{precision}/{sha256[:12]}", data, sha256, config)


def _onnx_bytes(path: Path) -> bytes:
    """The graph with only the operator sets its nodes use: the ONNX Runtime in ML Commons (1.16) refuses a
    model that merely declares a newer set (``ai.onnx.ml`` 5) than it knows."""
    import onnx

    graph = onnx.load(str(path))
    used = {node.domain for node in graph.graph.node} | {""}
    kept = [opset for opset in graph.opset_import if opset.domain in used]
    del graph.opset_import[:]
    graph.opset_import.extend(kept)
    return bytes(graph.SerializeToString())


def _tokenizer_json(folder: Path, manifest: Manifest) -> str:
    """The tokenizer truncating at the model's length, without padding: ML Commons passes no length of its own
    (it reads the file's, else 512) and pools over what the file's padding adds as over real tokens' mask."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["truncation"] = {**(tokenizer.get("truncation") or {"direction": "Right", "strategy": "LongestFirst",
                                                                  "stride": 0}),
                               "max_length": manifest.max_length}
    tokenizer["padding"] = None
    return json.dumps(tokenizer)


def deploy(backend: OpenSearchBackend, model: str, precision: Precision = "fp32") -> Deployment:
    """Register ``model`` (once), deploy it, and check its vectors against hybrid's; a model whose vectors
    differ is undeployed again and refused."""
    require_ml_commons(backend)
    made = package(model, precision)
    group = _group(backend, made.name)
    found = _registered(backend, made, group)
    model_id = found or _register(backend, made, group)
    state = _model(backend, model_id).get("model_state")
    if state != "DEPLOYED":
        _wait_task(backend, _ml(backend, "POST", f"models/{model_id}/_deploy")["task_id"], f"deploying {made.name}")
    try:
        least, mean = agreement(backend, model_id, model, precision)
        if not least >= AGREEMENT[precision]:  # NaN too
            raise HybridError(f"the cluster's vectors of {made.name} differ from hybrid's (least cosine {least:.6f}, "
                              f"below {AGREEMENT[precision]}): not used; embed on the client")
    except HybridError:
        if state != "DEPLOYED":  # one this deploy started; a model that served before keeps serving
            _ml(backend, "POST", f"models/{model_id}/_undeploy")
        raise
    return Deployment(model_id, made.name, found is None, least, mean)


def agreement(backend: OpenSearchBackend, model_id: str, model: str, precision: Precision,
              texts: tuple[str, ...] = PROBES) -> tuple[float, float]:
    """The least and mean cosine between the cluster's vectors of ``texts`` and hybrid's own."""
    theirs = embedded(backend, model_id, list(texts))
    ours = OnnxEncoder(ensure_export(model, precision)).encode(list(texts))
    if theirs.shape != ours.shape:
        raise HybridError(f"the cluster's model {model_id} gave vectors of shape {theirs.shape}, hybrid's "
                          f"{ours.shape}: not used; embed on the client")
    cosines = np.sum(theirs * ours, axis=1) / np.linalg.norm(theirs, axis=1)
    return float(cosines.min()), float(cosines.mean())


def embedded(backend: OpenSearchBackend, model_id: str, texts: list[str]) -> np.ndarray:
    """The cluster's vectors of ``texts`` (``_predict``)."""
    answer = _ml(backend, "POST", f"_predict/text_embedding/{model_id}",
                 {"text_docs": texts, "return_number": True, "target_response": ["sentence_embedding"]})
    return np.array([result["output"][0]["data"] for result in answer["inference_results"]], dtype=np.float32)


def undeploy(backend: OpenSearchBackend, model_id: str) -> str:
    """Undeploy the model ``model_id`` that hybrid registered (it stays registered: deploying it again uploads
    nothing); its name."""
    require_ml_commons(backend)
    found = _model(backend, model_id)
    group = _ml(backend, "GET", f"model_groups/{found.get('model_group_id')}") if found.get("model_group_id") else {}
    if not str(group.get("description", "")).startswith(MARK):
        raise HybridError(f"model {model_id} at {backend.location} was not registered by hybrid; it is left alone")
    if found.get("model_state") in ("DEPLOYED", "PARTIALLY_DEPLOYED", "DEPLOYING"):
        _ml(backend, "POST", f"models/{model_id}/_undeploy")
        _wait_state(backend, model_id, ("UNDEPLOYED", "REGISTERED", "DEPLOY_FAILED"), "undeploying")
    return str(found.get("name", model_id))


def ingest_on_server(source: str | Path, index: str, backend: OpenSearchBackend, encoder: Encoder,
                     id_field: str | None = None, text_fields: Sequence[str] | None = None, progress: bool = True,
                     chunking: str | None = None) -> tuple[Deployment, IngestReport]:
    """``hybrid ingest --embed-on server``: every record read and checked first, then ``encoder``'s model
    deployed (once) and checked, then the documents written as texts (windows where the index chunks, cut
    as hybrid cuts them) for the cluster to embed; what changed only, as any ingest."""
    documents = read_documents(source, id_field=id_field, text_fields=text_fields)
    deployment = deploy(backend, encoder.name, cast(Precision, encoder.precision))
    report = ingest_documents(documents, index, backend, encoder, progress=progress, chunking=chunking,
                              embed_with=deployment.model_id)
    return deployment, report


def deploy_for(backend: OpenSearchBackend, index: str) -> Deployment:
    """Deploy the model ``index`` was built with and record its id in the index, for text-only searches."""
    meta = backend.meta(index)
    deployment = deploy(backend, meta.model, cast(Precision, meta.precision))
    current = backend.meta(index)  # deploying took a while: a re-index may have switched models meanwhile
    if (current.model, current.precision) != (meta.model, meta.precision):
        raise HybridError(f"{index} was re-indexed with {current.model} while {meta.model} was deployed: "
                          f"run `hybrid model deploy --index {index}` again")
    if current.server_model != deployment.model_id:
        backend.record_meta(index, replace(current, server_model=deployment.model_id))
    return deployment


def undeploy_for(backend: OpenSearchBackend, index: str) -> str:
    """Undeploy the model recorded in ``index`` and forget it there; its name."""
    meta = backend.meta(index)
    if not meta.server_model:
        raise HybridError(f"index {index!r} records no model deployed in the cluster")
    sharing = [name for name in backend.names()
               if name != index and backend.meta(name).server_model == meta.server_model]
    if sharing:  # one deployed model serves every index of that model
        raise HybridError(f"model {meta.server_model} also embeds for {', '.join(sharing)}: undeploy it with "
                          f"--model-id {meta.server_model} where none of them needs it any more")
    name = undeploy(backend, meta.server_model)
    backend.record_meta(index, replace(meta, server_model=""))
    return name


def require_ml_commons(backend: OpenSearchBackend) -> None:
    rows, _ = backend.plugins()
    if not any(row.get("component") == ML_PLUGIN for row in rows):
        raise NoMlCommonsError(f"{backend.location} has no ML Commons (the {ML_PLUGIN} plugin) on any node, so it "
                               "cannot run models: install it, or embed on the client")


def _ml(backend: OpenSearchBackend, method: str, path: str, body: Any = None) -> Any:
    try:
        return backend.request(method, f"/_plugins/_ml/{path}", body)
    except HybridError as error:  # the same error (class, status, cause), its message advised
        error.args = (_advised(str(error)), *error.args[1:])
        raise


def _advised(message: str) -> str:
    """``message`` with what to change appended, where ML Commons' words in it are one of ``SETUP_ADVICE``."""
    return next((f"{message} ({advice})" for words, advice in SETUP_ADVICE if words.search(message)), message)


def _model(backend: OpenSearchBackend, model_id: str) -> dict[str, Any]:
    return dict(_ml(backend, "GET", f"models/{model_id}"))


def _group(backend: OpenSearchBackend, name: str) -> str:
    """The id of hybrid's model group ``name``, made where there is none; another's of that name is refused.
    A group made meanwhile (another deploy at once, or this request's own first try before a retry) is the
    one used: ML Commons refuses the name again, naming that group."""
    found = _searched(backend, "model_groups", {"term": {"name.keyword": name}})
    if found:
        return _ours(backend, name, str(found[0]["_id"]), found[0]["_source"])
    try:
        made = _ml(backend, "POST", "model_groups/_register",
                   {"name": name, "description": f"{MARK} {name}, as hybrid embeds with it"})
    except HybridError as error:
        taken = NAME_TAKEN.search(str(error))
        if taken is None:
            raise
        return _ours(backend, name, taken["id"], _ml(backend, "GET", f"model_groups/{taken['id']}"))
    return str(made["model_group_id"])


def _ours(backend: OpenSearchBackend, name: str, group_id: str, group: dict[str, Any]) -> str:
    """``group_id``, where the group is hybrid's (its description starts with ``MARK``)."""
    if not str(group.get("description", "")).startswith(MARK):
        raise HybridError(f"a model group named {name!r} at {backend.location} was not made by hybrid; "
                          "it is left alone (rename it, or embed on the client)")
    return group_id


def _registered(backend: OpenSearchBackend, made: Package, group: str) -> str | None:
    """The id of this very package, registered whole in hybrid's ``group`` before, if the cluster has it. One
    left broken (an upload cut off, a deploy that failed) is passed over, so the package is registered anew."""
    found = _searched(backend, "models", {"bool": {
        "filter": [{"term": {"model_group_id": group}}, {"term": {"model_content_hash_value": made.sha256}}],
        "must_not": [{"exists": {"field": "chunk_number"}}]}})
    usable = [hit for hit in found if hit["_source"].get("model_state") in USABLE]
    return str(usable[0]["_id"]) if usable else None


def _searched(backend: OpenSearchBackend, kind: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The hits of a search of ML Commons' ``kind`` (models, model_groups); none before any was made."""
    try:
        return list(_ml(backend, "POST", f"{kind}/_search",  # the oldest first: every run picks the same one
                        {"size": 100, "query": query, "sort": [{"created_time": "asc"}]})["hits"]["hits"])
    except HybridError as error:
        if error.status == 404:  # ML Commons makes its system indexes on first use
            return []
        raise


def _register(backend: OpenSearchBackend, made: Package, group: str) -> str:
    chunks = [made.content[start:start + CHUNK_BYTES] for start in range(0, len(made.content), CHUNK_BYTES)]
    model_id = str(_ml(backend, "POST", "models/_register_meta", {
        "name": made.name, "model_group_id": group, "model_format": "ONNX", "model_config": made.config,
        "description": f"{MARK} {made.name}, as hybrid embeds with it", "model_content_hash_value": made.sha256,
        "model_content_size_in_bytes": len(made.content), "total_chunks": len(chunks)})["model_id"])
    for number, chunk in enumerate(chunks):
        _ml(backend, "POST", f"models/{model_id}/upload_chunk/{number}", chunk)
    _wait_state(backend, model_id, ("REGISTERED",), f"registering {made.name}")
    return model_id


def _wait_state(backend: OpenSearchBackend, model_id: str, states: tuple[str, ...], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while (state := _model(backend, model_id).get("model_state")) not in states:
        if time.monotonic() > deadline:
            raise HybridError(f"{what} at {backend.location}: still {state} after {WAIT_S:.0f} s")
        time.sleep(0.5)


def _wait_task(backend: OpenSearchBackend, task_id: str, what: str) -> None:
    """Wait for an ML Commons task to end; any end but COMPLETED (FAILED, COMPLETED_WITH_ERROR on some
    nodes, CANCELLED, EXPIRED, UNREACHABLE) is an error naming the state and a node's reason."""
    deadline = time.monotonic() + WAIT_S
    while (task := dict(_ml(backend, "GET", f"tasks/{task_id}")))["state"] in ("CREATED", "RUNNING"):
        if time.monotonic() > deadline:
            raise HybridError(f"{what} at {backend.location}: still {task['state']} after {WAIT_S:.0f} s")
        time.sleep(0.5)
    if task["state"] != "COMPLETED":
        raise HybridError(f"{what} at {backend.location} ended {task['state']}: "
                          f"{_advised(_first_error(task.get('error')))}")


def _first_error(error: Any) -> str:
    """One node's reason from a task's ``error`` (a JSON object of node id -> message)."""
    try:
        reasons = json.loads(error) if isinstance(error, str) else error
        text = str(next(iter(reasons.values()))) if isinstance(reasons, dict) and reasons else str(error)
    except ValueError:
        text = str(error)
    return text.splitlines()[0][:500]
