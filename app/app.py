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
"""A teacher-facing page: name the misconception behind a student's math answer.

Two tabs. MAP: a question (from the model's list, or your own), the student's chosen answer and explanation ->
the most likely `Category:Misconception` labels with their probabilities. Eedi: a question, its correct answer
and the student's wrong answer -> the nearest of the 2,587 written misconceptions.

Safe to deploy as a public Space: the page never takes a server path or a model id. You, the operator, fix the models
and the misconception list here (flags, or environment variables on a Space); they are all loaded at start, and the
page shows their names, tasks and metrics. A model is SOURCE (a local folder, a Hub id or builtin:all-MiniLM-L6-v2,
shown by its folder name or id) or LABEL=SOURCE. With --allow_model_choice, give several (repeat the flag, or
comma-separate in the variable) and visitors pick one from a list.
  MISCONCEPTIONS_MAP_MODEL      (default data/demo/map-minilm-cpu)
  MISCONCEPTIONS_EEDI_MODEL     (default data/demo/eedi-minilm-cpu-round2-continued)
  MISCONCEPTIONS_MAPPING_CSV    (default $MISCONCEPTIONS_DATA/eedi/misconception_mapping.csv, i.e. ../shared/data)
  MISCONCEPTIONS_BACKEND        (default auto: ONNX Runtime on a CPU, int8 for the classifier; torch on a GPU)
  MISCONCEPTIONS_ALLOW_MODEL_CHOICE, MISCONCEPTIONS_CONCURRENCY, MISCONCEPTIONS_MAX_QUEUE, MISCONCEPTIONS_REQUEST_TIMEOUT

Under load: at most --concurrency_limit requests compute at once, --max_queue more wait, and further ones get
Gradio's "busy, please try again" message; a request running past --request_timeout seconds is answered with a
time-out message. The API (gradio_client: /predict_map, /predict_eedi) has the same limits and validation.
"""

import argparse
import os
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from misconceptions import InputError
from misconceptions import app as logic
from misconceptions.cli import setup_script_logging
from misconceptions.onnx_backend import BACKENDS


ROOT = Path(__file__).resolve().parents[1]
PRIVATE = {"api_visibility": "private"}  # page plumbing, not part of the public API
MAX_BODY_BYTES = 2 * 1024 * 1024  # a request body larger than this is refused (413) before it is read


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` (by Content-Length, or as they stream in), so one
    request cannot make the server hold an unbounded upload in memory. The form's own limits are far smaller."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ValueError("request body too large")
            return message

        return await self.app(scope, limited_receive, send)

    async def _refuse(self, send) -> None:
        body = b"Request body too large."
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def build_demo(models: logic.ServedModels) -> gr.Blocks:
    """The page: a MAP tab and an Eedi tab, each with the operator's model(s), a form, a status line, the text the
    model read and the results table."""
    settings = models.settings
    timeout = settings.request_timeout
    map_labels, eedi_labels = list(models.map_models), list(models.eedi_models)

    def map_model_changed(label):
        choices, message = logic.page_call(logic.map_question_choices, models, label, what="reading the model")
        if choices is None:
            return gr.Dropdown(choices=[("Type my own question", logic.CUSTOM_QUESTION)]), message
        note, _ = logic.page_call(logic.ServedModels.model_note, models, "map", label)
        return gr.Dropdown(choices=choices, value=logic.CUSTOM_QUESTION), note

    def map_question_changed(label, question_id):
        details, message = logic.page_call(
            logic.map_question_details, models, label, question_id, what="reading the question"
        )
        if details is None:
            return gr.Textbox(), message
        text, note = details
        return (gr.Textbox(value=text) if text else gr.Textbox()), note

    def respond(predict, columns: list[str], what: str, done: str, *args):
        """(table, the text the model read, status) for one submission, within the operator's time limit."""
        result, message = logic.page_call(
            predict, models, *args, what=what, timeout=timeout, workers=settings.concurrency_limit
        )
        if result is None:
            return pd.DataFrame(columns=columns), "", message
        table, model_input = result
        return table, model_input, done.format(n=len(table))

    def predict_map(label, question_id, question_text, answer, explanation, top_k):
        args = (label, question_id, question_text, answer, explanation, top_k)
        done = "The {n} most likely labels for this answer, best first."
        return respond(logic.predict_map, logic.MAP_COLUMNS, "the MAP prediction", done, *args)

    def eedi_model_changed(label):
        note, message = logic.page_call(logic.ServedModels.model_note, models, "eedi", label)
        return message if note is None else note

    def predict_eedi(label, question, correct, wrong, construct, subject, top_k):
        args = (label, question, correct, wrong, construct, subject, top_k)
        done = "The {n} misconceptions closest to this wrong answer, best first."
        return respond(logic.predict_eedi, logic.EEDI_COLUMNS, "the Eedi search", done, *args)

    def model_box(labels: list[str], label: str, elem_id: str) -> gr.Dropdown:
        """The operator's models by label: fixed, or a dropdown with --allow_model_choice; never free text."""
        value = labels[0] if labels else None
        return gr.Dropdown(
            choices=labels, value=value, label=label, interactive=settings.allow_model_choice, elem_id=elem_id
        )

    with gr.Blocks(title="Misconceptions: why did the student get it wrong?", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Why did the student get it wrong?\n"
            "Enter a student's answer to see the misconceptions behind it, as the trained models see them."
        )
        status_kwargs = {"latex_delimiters": [], "sanitize_html": True}
        with gr.Tab("MAP: explain a student's answer", id="map", visible=bool(map_labels)):
            map_model = model_box(map_labels, "MAP model", "map-model")
            map_model_note = gr.Markdown(elem_id="map-model-note", **status_kwargs)
            question = gr.Dropdown(
                choices=[("Type my own question", logic.CUSTOM_QUESTION)],
                value=logic.CUSTOM_QUESTION,
                label="Question",
                elem_id="map-question",
            )
            question_note = gr.Markdown(elem_id="map-question-note", **status_kwargs)
            question_text = gr.Textbox(label="Question text", lines=2, elem_id="map-question-text")
            answer = gr.Textbox(label="The student's chosen answer", elem_id="map-answer")
            explanation = gr.Textbox(
                label="The student's explanation", lines=3, max_lines=8, elem_id="map-explanation"
            )
            map_k = gr.Slider(1, logic.MAP_MAX_K, logic.MAP_TOP_K, step=1, label="Labels to show", elem_id="map-top-k")
            map_btn = gr.Button("Submit", variant="primary", elem_id="map-submit")
            map_status = gr.Markdown(elem_id="map-status", **status_kwargs)
            map_input = gr.Textbox(label="What the model read", interactive=False, lines=2, elem_id="map-input")
            map_table = gr.Dataframe(
                headers=logic.MAP_COLUMNS,
                datatype=["number", "str", "str", "number", "str"],
                label="Most likely labels",
                interactive=False,
                wrap=True,
                column_widths=["8%", "30%", "34%", "13%", "15%"],
                elem_id="map-results",
            )
        with gr.Tab("Eedi: diagnose a wrong answer", id="eedi", visible=bool(eedi_labels)):
            eedi_model = model_box(eedi_labels, "Eedi retriever", "eedi-model")
            eedi_model_note = gr.Markdown(elem_id="eedi-model-note", **status_kwargs)
            eedi_question = gr.Textbox(label="Question", lines=2, elem_id="eedi-question")
            with gr.Row():
                correct = gr.Textbox(label="Correct answer", elem_id="eedi-correct")
                wrong = gr.Textbox(label="The student's wrong answer", elem_id="eedi-wrong")
            with gr.Row():
                construct = gr.Textbox(label="Construct (optional)", elem_id="eedi-construct")
                subject = gr.Textbox(label="Subject (optional)", elem_id="eedi-subject")
            eedi_k = gr.Slider(
                1, logic.EEDI_MAX_K, logic.EEDI_TOP_K, step=1, label="Misconceptions to show", elem_id="eedi-top-k"
            )
            eedi_btn = gr.Button("Submit", variant="primary", elem_id="eedi-submit")
            eedi_status = gr.Markdown(elem_id="eedi-status", **status_kwargs)
            eedi_input = gr.Textbox(label="What the model read", interactive=False, lines=2, elem_id="eedi-input")
            eedi_table = gr.Dataframe(
                headers=logic.EEDI_COLUMNS,
                datatype=["number", "number", "str", "number"],
                label="Closest misconceptions",
                interactive=False,
                wrap=True,
                column_widths=["8%", "16%", "62%", "14%"],
                elem_id="eedi-results",
            )

        # Page plumbing (private); the two predictions are the public API, with the same validation and limits.
        if map_labels:
            demo.load(map_model_changed, [map_model], [question, map_model_note], **PRIVATE)
            map_model.change(map_model_changed, [map_model], [question, map_model_note], **PRIVATE)
            question.change(map_question_changed, [map_model, question], [question_text, question_note], **PRIVATE)
            map_inputs = [map_model, question, question_text, answer, explanation, map_k]
            map_outputs = [map_table, map_input, map_status]
            limits = {"concurrency_id": "predict", "show_progress_on": [map_table]}
            map_btn.click(predict_map, map_inputs, map_outputs, api_name="predict_map", **limits)
            explanation.submit(predict_map, map_inputs, map_outputs, **limits, **PRIVATE)
        if eedi_labels:
            demo.load(eedi_model_changed, [eedi_model], [eedi_model_note], **PRIVATE)
            eedi_model.change(eedi_model_changed, [eedi_model], [eedi_model_note], **PRIVATE)
            eedi_inputs = [eedi_model, eedi_question, correct, wrong, construct, subject, eedi_k]
            eedi_outputs = [eedi_table, eedi_input, eedi_status]
            limits = {"concurrency_id": "predict", "show_progress_on": [eedi_table]}
            eedi_btn.click(predict_eedi, eedi_inputs, eedi_outputs, api_name="predict_eedi", **limits)
    # One queue for everything: `concurrency_limit` requests at once, `max_queue` waiting, the rest told to retry.
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue)
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--map_model",
        action="append",
        help="MAP classifier, SOURCE or LABEL=SOURCE; repeat with --allow_model_choice "
        "(default $MISCONCEPTIONS_MAP_MODEL or data/demo/map-minilm-cpu)",
    )
    parser.add_argument(
        "--eedi_model",
        action="append",
        help="Eedi retriever, SOURCE or LABEL=SOURCE; repeat with --allow_model_choice "
        "(default $MISCONCEPTIONS_EEDI_MODEL or data/demo/eedi-minilm-cpu-round2-continued)",
    )
    parser.add_argument("--misconceptions_csv", help="the 2,587 misconception names (default: see above)")
    parser.add_argument("--backend", choices=BACKENDS, help="inference backend (default auto)")
    parser.add_argument(
        "--allow_model_choice",
        action="store_true",
        default=None,
        help="let visitors pick among the models you list (a dropdown; never free text)",
    )
    parser.add_argument("--concurrency_limit", type=int, help="requests computed at once (default 2)")
    parser.add_argument("--max_queue", type=int, help="requests waiting before the busy message (default 32)")
    parser.add_argument("--request_timeout", type=float, help="seconds one request may take (default 30)")
    parser.add_argument(
        "--host",
        default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (default $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860)"
    )
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> logic.AppSettings:
    """Flags over environment variables over the demo defaults."""
    settings = logic.default_settings(ROOT)
    if args.map_model:
        settings.map_models = logic.parse_model_specs(args.map_model, "--map_model")
    if args.eedi_model:
        settings.eedi_models = logic.parse_model_specs(args.eedi_model, "--eedi_model")
    for name in ("misconceptions_csv", "backend", "allow_model_choice", "concurrency_limit", "max_queue"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if args.request_timeout is not None:
        settings.request_timeout = args.request_timeout
    settings.__post_init__()  # check the combination again after the flags
    return settings


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_script_logging()
    try:
        models = logic.ServedModels.load(settings_from_args(args))
    except InputError as err:  # the operator's console: one line, then exit
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    # show_error stays off: failures reach the page as the short status messages built in misconceptions.app.
    build_demo(models).launch(
        server_name=args.host,
        server_port=args.port,
        show_error=False,
        ssr_mode=False,
        app_kwargs={"middleware": [Middleware(BodySizeLimit)]},
    )


if __name__ == "__main__":
    main()
