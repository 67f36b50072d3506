# Copyright 2026 The misconceptions authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Why `onnx_export.QUANTIZATION` is what it is: int8 variants of the trained models, speed and accuracy by batch size.

For the MAP classifier (end to end with `rank_dataframe`, MAP@3 on the validation split) and the Eedi retriever
(query encoding, MAP@25 on the held-out fold), in one process per model, against torch and fp32 ONNX:
  - `all`: every weight MatMul in int8 (the package's setting);
  - `keep-down`: the feed-forward down-projections kept in fp32;
  - `fused`: ONNX Runtime's transformer fusion (Attention, SkipLayerNorm, BiasGelu) quantized with QAttention;
  - `all-sdpa`: `all`, but exported with the model's SDPA attention instead of eager attention.
For `all`, `keep-down` and `all-sdpa`, an ONNX Runtime profile at the middle batch size gives each op type's share
of the kernel time (`profile`); `attention` sums the attention core's ops (the fp32 score and mixing MatMuls,
softmax, transposes, the mask's Add/Where/IsNaN), which is what it means where every weight MatMul is int8 (`all`,
`all-sdpa`; in `keep-down` it also counts the fp32 down-projections). Dynamic int8 quantizes activations with one
scale per batch, so its scores depend on the batch size: each variant runs at several. Weights are 7-bit (`reduce_range`) exactly when the package would use them on this CPU.
Eedi MAP@25 is scored twice per variant: against fp32 ONNX documents (`map@25`, what the package's onnx-int8 retriever
does) and against the variant's own documents (`map@25_own_documents`); torch, `all` and `keep-down` are also
scored, untimed, at every `--accuracy_batch_sizes` (`accuracy`).

Usage:

    python bench/int8_variants.py --map_model data/demo/map-minilm-cpu --map_csv data/demo/map/validation.csv \
        --eedi_model data/demo/eedi-minilm-cpu --eedi_csv data/demo/eedi/fold0.csv \
        --misconceptions_csv ../shared/data/eedi/misconception_mapping.csv --output bench/results/int8_variants.json
"""

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("all", "keep-down", "fused", "all-sdpa")
PROFILED = ("all", "keep-down", "all-sdpa")
ATTENTION_OPS = ("MatMul", "FusedMatMul", "Softmax", "Transpose", "Add", "Where", "IsNaN")


def down_projections(path: Path) -> list[str]:
    """The MatMuls whose weight has more rows than columns: the feed-forward down-projections (and a head's)."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul"
        and len(shapes.get(node.input[1], ())) == 2
        and shapes[node.input[1]][0] > shapes[node.input[1]][1]
    ]


def make_variants(fp32: Path, work: Path, model, tokenizer, input_names: list[str], output: str) -> dict:
    """{variant: int8 file}, built from the package's fp32 export (and, for all-sdpa, an SDPA export)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    from misconceptions import onnx_export

    settings = onnx_export.quantization_settings()
    paths = {variant: work / f"{variant}.onnx" for variant in VARIANTS}
    onnx_export._quantize(fp32, paths["all"], settings)
    onnx_export._quantize(fp32, paths["keep-down"], settings, nodes_to_exclude=down_projections(fp32))
    onnx_export._export(model, tokenizer, input_names, output, work / "sdpa.onnx", eager_attention=False)
    onnx_export._quantize(work / "sdpa.onnx", paths["all-sdpa"], settings)
    config = model.config
    fused = optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    fused.save_model_to_file(str(work / "fused-fp32.onnx"))
    quantize_dynamic(
        work / "fused-fp32.onnx",
        paths["fused"],
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=settings["reduce_range"],
        op_types_to_quantize=["MatMul", "Attention"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # shapes of the fused (contrib) ops
    )
    return paths


def token_batches(tokenizer, texts: list[str], input_names: list[str], max_length: int, batch_size: int) -> list:
    """The padded batches the ONNX backends feed, built the same way."""
    from misconceptions.onnx_backend import _tokenize, length_sorted_batches

    ids = _tokenize(tokenizer, texts, max_length)
    left = tokenizer.padding_side == "left"
    return [b for _, b in length_sorted_batches(ids, input_names, tokenizer.pad_token_id or 0, batch_size, left)]


def op_profile(path: Path, batches: list[dict]) -> dict:
    """Each op type's share of ONNX Runtime's kernel time over one pass of the batches, and the attention core's."""
    import onnxruntime as ort

    from misconceptions.onnx_export import num_threads

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads, options.inter_op_num_threads = num_threads(), 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in batches:
        session.run(None, batch)
    trace = Path(session.end_profiling())
    times = Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(times.values())
    return {
        "attention": round(sum(times[op] for op in ATTENTION_OPS) / total, 3),
        "ops": {op: round(t / total, 3) for op, t in times.most_common(10)},
    }


def timed(fn, repeats: int) -> tuple[float, object]:
    """The best of `repeats` wall times of fn(), and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def map_worker(args) -> dict:
    from misconceptions import load_classifier, map_at_k, rank_dataframe, read_map_csv, texts_for
    from misconceptions.onnx_export import OnnxSession

    df = read_map_csv(args.map_csv, require_labels=True, allow_empty_explanation=True)
    labels = df["label"].tolist()
    clf = load_classifier(args.map_model, backend="onnx")
    torch_clf = load_classifier(args.map_model, backend="torch")
    fp32, names = clf.onnx.session.path, clf.onnx.input_names
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": fp32} | make_variants(fp32, Path(tmp), clf.model, clf.tokenizer, names, "logits")
        texts = texts_for(df, clf.settings.text_template)
        middle = args.batch_sizes[len(args.batch_sizes) // 2]
        batches = token_batches(clf.tokenizer, texts, names, clf.settings.max_length, middle)
        results["profile"] = {v: op_profile(paths[v], batches) for v in PROFILED}
        for name in ("torch", *paths):
            if name != "torch":
                clf.onnx.session = OnnxSession(paths[name], names)
            model = torch_clf if name == "torch" else clf
            for batch_size in args.batch_sizes if name not in ("torch", "fp32") else [args.batch_sizes[-1]]:
                rank_dataframe(model, df.head(256), batch_size=batch_size)  # warm-up
                seconds, ranked = timed(lambda m=model, b=batch_size: rank_dataframe(m, df, batch_size=b), 2)
                results[f"{name} @ {batch_size}"] = {
                    "rows_per_second": round(len(df) / seconds, 1),
                    "map@3": round(map_at_k(labels, ranked, k=3), 4),
                }
                print(f"map  {name:10s} batch {batch_size:4d} {results[f'{name} @ {batch_size}']}", flush=True)
    return results


def eedi_worker(args) -> dict:
    from inference_speed import labelled_eedi_rows  # bench/ is the script's folder, first on sys.path

    from misconceptions import load_retriever, retrieval_metrics, search
    from misconceptions.eedi import query_texts
    from misconceptions.onnx_export import OnnxSession
    from misconceptions.retrieval import encode_documents, encode_queries

    misconceptions, rows = labelled_eedi_rows(args)
    gold = rows["MisconceptionId"].astype(int).tolist()
    names, ids = misconceptions["MisconceptionName"].tolist(), misconceptions["MisconceptionId"].to_numpy()
    torch_model, settings = load_retriever(args.eedi_model, backend="torch")
    queries = query_texts(rows, settings.query_template)
    encoder, _ = load_retriever(args.eedi_model, backend="onnx")
    fp32, inputs, tokenizer = encoder.query_session.path, encoder.input_names, encoder.tokenizer
    fp32_documents = encode_documents(encoder, names, 64)

    def map_at_25(query_embeddings, documents) -> float:
        _, indices = search(query_embeddings, documents, 100)
        return round(retrieval_metrics(gold, ids[indices])["map@25"], 4)

    results = {"accuracy": {}}
    with tempfile.TemporaryDirectory() as tmp:
        made = make_variants(fp32, Path(tmp), encoder[0].auto_model, tokenizer, inputs, "last_hidden_state")
        paths = {"fp32": fp32} | made
        middle = args.batch_sizes[len(args.batch_sizes) // 2]
        prompted = encoder._prompted(queries, "query")
        batches = token_batches(tokenizer, prompted, inputs, encoder._max_length("query"), middle)
        results["profile"] = {v: op_profile(paths[v], batches) for v in PROFILED}
        for name in ("torch", *paths):
            model = torch_model if name == "torch" else encoder
            if name != "torch":  # queries and documents through the variant
                encoder.query_session = encoder._document_session = OnnxSession(paths[name], inputs)
            for batch_size in args.batch_sizes:
                encode_queries(model, queries[:batch_size], batch_size)  # warm-up
                seconds, query_embeddings = timed(lambda m=model, b=batch_size: encode_queries(m, queries, b), 3)
                results[f"{name} @ {batch_size}"] = {
                    "queries_per_second": round(len(queries) / seconds, 1),
                    "map@25": map_at_25(query_embeddings, fp32_documents),
                    "map@25_own_documents": map_at_25(query_embeddings, encode_documents(model, names, batch_size)),
                }
                print(f"eedi {name:10s} batch {batch_size:4d} {results[f'{name} @ {batch_size}']}", flush=True)
            if name in ("torch", "all", "keep-down"):  # MAP@25 at more batch sizes, untimed
                own = encode_documents(model, names, 64)
                for batch_size in args.accuracy_batch_sizes:
                    query_embeddings = encode_queries(model, queries, batch_size)
                    results["accuracy"][f"{name} @ {batch_size}"] = {
                        "map@25": map_at_25(query_embeddings, fp32_documents),
                        "map@25_own_documents": map_at_25(query_embeddings, own),
                    }
                print(f"eedi {name:10s} accuracy done", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map_model", default="data/demo/map-minilm-cpu")
    parser.add_argument("--map_csv", default="data/demo/map/validation.csv")
    parser.add_argument("--eedi_model", default="data/demo/eedi-minilm-cpu")
    parser.add_argument("--eedi_csv", default="data/demo/eedi/fold0.csv")
    parser.add_argument("--misconceptions_csv", default="../shared/data/eedi/misconception_mapping.csv")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 64, 128], help="the last one for fp32")
    parser.add_argument(
        "--accuracy_batch_sizes",
        type=int,
        nargs="+",
        default=[8, 16, 24, 32, 48, 64, 96, 128],
        help="Eedi MAP@25 of torch, all and keep-down at these batch sizes, untimed",
    )
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "int8_variants.json"))
    parser.add_argument("--worker", choices=("map", "eedi"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs every tensor it skips on the root logger
    if args.worker:
        results = map_worker(args) if args.worker == "map" else eedi_worker(args)
        print(json.dumps(results))
        return
    from misconceptions.onnx_export import cpu_has_vnni
    from misconceptions.profiling import cpu_info

    out = {"command": "python " + " ".join([f"bench/{Path(__file__).name}", *sys.argv[1:]]), "cpu": cpu_info()}
    out["reduce_range"] = not cpu_has_vnni()
    for worker in ("map", "eedi"):  # each in its own process
        proc = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--worker", worker],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        *progress, last = proc.stdout.strip().splitlines()
        print("\n".join(progress), flush=True)
        out[worker] = json.loads(last)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
