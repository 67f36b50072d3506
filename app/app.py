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

Models are local folders, Hub ids or `builtin:all-MiniLM-L6-v2` (zero-shot retrieval). Defaults come from the
environment (for a Hugging Face Space) or the demo models that `make demo` trains:
  MISCONCEPTIONS_MAP_MODEL     (default data/demo/map-minilm-cpu)
  MISCONCEPTIONS_EEDI_MODEL    (default data/demo/eedi-minilm-cpu)
  MISCONCEPTIONS_MAPPING_CSV   (default $MISCONCEPTIONS_DATA/eedi/misconception_mapping.csv, i.e. ../shared/data)
  MISCONCEPTIONS_BACKEND       (default auto: ONNX Runtime on a CPU, int8 for the classifier; torch on a GPU)
"""

import argparse
import logging
import os
from pathlib import Path

import gradio as gr
import pandas as pd

from misconceptions import app as logic
from misconceptions.onnx_backend import BACKENDS


ROOT = Path(__file__).resolve().parents[1]


def map_load(model: str):
    """Read the MAP model's question list (and load its weights) for the dropdown; a message when that fails."""
    choices, message = logic.page_call(logic.map_question_choices, model, what="loading the MAP model")
    if choices is None:
        return gr.Dropdown(
            choices=[("Type my own question", logic.CUSTOM_QUESTION)], value=logic.CUSTOM_QUESTION
        ), message
    status = f"MAP model `{model.strip()}`: {len(choices) - 1} known questions. Pick one or type your own."
    return gr.Dropdown(choices=choices, value=logic.CUSTOM_QUESTION), status


def map_question_changed(model: str, question_id: str):
    details, message = logic.page_call(logic.map_question_details, model, question_id, what="reading the question")
    if details is None:
        return gr.Textbox(), message
    text, note = details
    return (gr.Textbox(value=text) if text else gr.Textbox()), note


def map_submit(model, question_id, question_text, answer, explanation, top_k):
    table, message = logic.page_call(
        logic.predict_map, model, question_id, question_text, answer, explanation, top_k, what="the MAP prediction"
    )
    if table is None:
        return pd.DataFrame(columns=logic.MAP_COLUMNS), message
    return table, f"The {len(table)} most likely labels for this answer, best first."


def eedi_load(model: str, misconceptions_csv: str):
    def load():
        names = logic.load_misconceptions(misconceptions_csv)
        logic.load_eedi_retriever(model)
        return len(names)

    count, message = logic.page_call(load, what="loading the Eedi model")
    return message if count is None else f"Eedi model `{model.strip()}` ready, with {count:,} misconceptions."


def eedi_check(model: str, misconceptions_csv: str) -> str:
    note, message = logic.page_call(
        logic.check_eedi_settings, model, misconceptions_csv, what="checking the Eedi model"
    )
    return message if note is None else note


def eedi_submit(model, misconceptions_csv, question, correct, wrong, construct, subject, top_k):
    table, message = logic.page_call(
        logic.predict_eedi,
        model,
        misconceptions_csv,
        question,
        correct,
        wrong,
        construct,
        subject,
        top_k,
        what="the Eedi search",
    )
    if table is None:
        return pd.DataFrame(columns=logic.EEDI_COLUMNS), message
    return table, f"The {len(table)} misconceptions closest to this wrong answer, best first."


def build_demo(settings: logic.AppSettings) -> gr.Blocks:
    """The page: a MAP tab and an Eedi tab, each with its model path, form, status line and results table."""
    logic.set_backend(settings.backend)
    logic.import_model_code()
    with gr.Blocks(title="Misconceptions: why did the student get it wrong?", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Why did the student get it wrong?\n"
            "Enter a student's answer to see the misconceptions behind it, as the trained models see them."
        )
        with gr.Tab("MAP: explain a student's answer", id="map"):
            with gr.Row():
                map_model = gr.Textbox(settings.map_model, label="MAP model (folder or Hub id)", elem_id="map-model")
                map_load_btn = gr.Button("Load model", elem_id="map-load", scale=0)
            question = gr.Dropdown(
                choices=[("Type my own question", logic.CUSTOM_QUESTION)],
                value=logic.CUSTOM_QUESTION,
                label="Question",
                elem_id="map-question",
            )
            question_note = gr.Markdown(elem_id="map-question-note")
            question_text = gr.Textbox(label="Question text", lines=2, elem_id="map-question-text")
            answer = gr.Textbox(label="The student's chosen answer", elem_id="map-answer")
            explanation = gr.Textbox(
                label="The student's explanation", lines=3, max_lines=8, elem_id="map-explanation"
            )
            map_k = gr.Slider(1, logic.MAP_MAX_K, logic.MAP_TOP_K, step=1, label="Labels to show", elem_id="map-top-k")
            map_btn = gr.Button("Submit", variant="primary", elem_id="map-submit")
            map_status = gr.Markdown(elem_id="map-status")
            map_table = gr.Dataframe(
                headers=logic.MAP_COLUMNS,
                label="Most likely labels",
                interactive=False,
                wrap=True,
                column_widths=["8%", "30%", "34%", "13%", "15%"],
                elem_id="map-results",
            )
        with gr.Tab("Eedi: diagnose a wrong answer", id="eedi"):
            with gr.Row():
                eedi_model = gr.Textbox(
                    settings.eedi_model, label="Eedi retriever (folder or Hub id)", elem_id="eedi-model"
                )
                eedi_csv = gr.Textbox(
                    settings.misconceptions_csv, label="misconception_mapping.csv", elem_id="eedi-csv"
                )
                eedi_load_btn = gr.Button("Load model", elem_id="eedi-load", scale=0)
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
            eedi_status = gr.Markdown(elem_id="eedi-status")
            eedi_table = gr.Dataframe(
                headers=logic.EEDI_COLUMNS,
                label="Closest misconceptions",
                interactive=False,
                wrap=True,
                column_widths=["8%", "16%", "62%", "14%"],
                elem_id="eedi-results",
            )

        demo.load(map_load, [map_model], [question, map_status], show_progress_on=[question])
        map_load_btn.click(map_load, [map_model], [question, map_status], show_progress_on=[question])
        question.change(map_question_changed, [map_model, question], [question_text, question_note])
        map_inputs = [map_model, question, question_text, answer, explanation, map_k]
        map_btn.click(map_submit, map_inputs, [map_table, map_status], show_progress_on=[map_table])
        explanation.submit(map_submit, map_inputs, [map_table, map_status], show_progress_on=[map_table])
        demo.load(eedi_check, [eedi_model, eedi_csv], [eedi_status], show_progress="hidden")
        eedi_load_btn.click(eedi_load, [eedi_model, eedi_csv], [eedi_status], show_progress="minimal")
        eedi_inputs = [eedi_model, eedi_csv, eedi_question, correct, wrong, construct, subject, eedi_k]
        eedi_btn.click(eedi_submit, eedi_inputs, [eedi_table, eedi_status], show_progress_on=[eedi_table])
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    defaults = logic.default_settings(ROOT)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--map_model", default=defaults.map_model, help=f"MAP classifier (default {defaults.map_model})"
    )
    parser.add_argument(
        "--eedi_model", default=defaults.eedi_model, help=f"Eedi retriever (default {defaults.eedi_model})"
    )
    parser.add_argument(
        "--misconceptions_csv",
        default=defaults.misconceptions_csv,
        help=f"the 2,587 misconception names (default {defaults.misconceptions_csv})",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=defaults.backend,
        help=f"inference backend (default {defaults.backend}; auto: ONNX Runtime on a CPU, torch on a GPU)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to serve on (default $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(name)s - %(message)s")
    settings = logic.AppSettings(args.map_model, args.eedi_model, args.misconceptions_csv, args.backend)
    # show_error stays off: failures reach the page as the short status messages built in misconceptions.app.
    build_demo(settings).launch(server_name=args.host, server_port=args.port, show_error=False, ssr_mode=False)


if __name__ == "__main__":
    main()
