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
"""The teacher-facing app: its logic (validation, predictions equal to the package's), then the real page in a
headless Chromium driven by Playwright, on a tiny trained MiniLM classifier and the zero-shot packaged retriever."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from misconceptions import InputError
from misconceptions import app as logic
from misconceptions.classifier import load_classifier, rank_dataframe
from misconceptions.eedi import pivot_wrong_answers, read_misconceptions_csv, read_questions_csv, write_wide_csv
from misconceptions.model_utils import resolve_model_path
from misconceptions.onnx_backend import resolve_backend
from misconceptions.retrieval import retrieve_candidates

from .conftest import DATA, REPO


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAPPING_CSV = DATA / "eedi" / "misconception_mapping.csv"
EEDI_TRAIN = DATA / "eedi" / "train.csv"
ZERO_SHOT = "builtin:all-MiniLM-L6-v2"
HUGE = "I think the answer is right because " * 3000  # about 110 KB


@pytest.fixture(scope="module", autouse=True)
def embedding_cache(tmp_path_factory):
    """One misconception-embedding cache for this module and the app server it starts (never the user's)."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MISCONCEPTIONS_CACHE")
    os.environ["MISCONCEPTIONS_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("MISCONCEPTIONS_CACHE", None)
    else:
        os.environ["MISCONCEPTIONS_CACHE"] = old


@pytest.fixture(scope="module")
def map_model(minilm_classifier) -> Path:
    """A MiniLM classifier with the TF-IDF blend, trained for 4 steps on real MAP rows (tests/conftest.py)."""
    return minilm_classifier


@pytest.fixture(scope="module")
def map_row(small_map_dataset) -> dict:
    """A real held-out MAP row, preferably one labelled with a misconception."""
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    misconception = val[val["Category"] == "False_Misconception"]
    return (misconception if len(misconception) else val).iloc[0].to_dict()


@pytest.fixture(scope="module")
def eedi_case(tmp_path_factory) -> dict:
    """A real labelled Eedi wrong answer and the package's own top-10 for it (retrieve_candidates on its CSV)."""
    if not (EEDI_TRAIN.is_file() and MAPPING_CSV.is_file()):
        pytest.skip(f"{EEDI_TRAIN} or {MAPPING_CSV} not found (set MISCONCEPTIONS_DATA)")
    misconceptions = read_misconceptions_csv(MAPPING_CSV)
    questions = read_questions_csv(EEDI_TRAIN, set(misconceptions["MisconceptionId"]))
    rows = pivot_wrong_answers(questions, misconceptions)
    fields = ["QuestionText", "CorrectAnswerText", "AnswerText", "ConstructName", "SubjectName"]
    clean = rows[fields].apply(lambda c: (c == c.str.strip()) & ~c.str.contains("\r", regex=False)).all(axis=1)
    row = rows[clean & rows["MisconceptionId"].notna()].iloc[0]
    csv = tmp_path_factory.mktemp("eedi") / "one_question.csv"
    write_wide_csv(questions[questions["QuestionId"] == row["QuestionId"]], csv)
    model_dir = resolve_model_path(ZERO_SHOT)
    # The app encodes one wrong answer at a time. int8 quantizes activations with one scale per batch, so the
    # expected ranking encodes each query alone too (batch 1), against the misconception embeddings the first call
    # caches at the default batch size, the ones the app reads from the same cache.
    retrieve_candidates(model_dir, str(csv), str(MAPPING_CSV), 10, backend="auto")
    candidates, _, _ = retrieve_candidates(model_dir, str(csv), str(MAPPING_CSV), 10, batch_size=1, backend="auto")
    expected = candidates[candidates["QuestionId_Answer"] == row["QuestionId_Answer"]].iloc[0]
    return {
        "row": row[fields].to_dict(),
        "ids": list(expected["candidate_ids"]),
        "names": list(expected["candidate_names"]),
    }


def expected_map(model: Path, question_id: str, question_text: str, answer: str, explanation: str):
    """The package's own ranking for one row: rank_dataframe on the saved model and the app's backend, as
    predict_classifier.py does."""
    row = {
        "row_id": "0",
        "QuestionId": question_id,
        "QuestionText": question_text,
        "MC_Answer": answer,
        "StudentExplanation": explanation,
    }
    classifier = load_classifier(str(model), backend="auto")
    return rank_dataframe(classifier, pd.DataFrame([row]), top_k=3, return_scores=True)


# ---------------------------------------------------------------- (a) the logic


@pytest.mark.parametrize(
    ("explanation", "needle"),
    [("", "The student's explanation is empty"), ("   \n ", "The student's explanation is empty"), (HUGE, "too long")],
)
def test_map_validation_messages(explanation, needle):
    table, message = logic.page_call(
        logic.predict_map, "/no/such/model", "custom", "What is 1/2 of 6?", "3", explanation
    )
    assert table is None and needle in message and "Traceback" not in message
    if needle == "too long":
        assert f"{len(HUGE.strip()):,} characters" in message and f"{logic.MAX_TEXT_CHARS:,}" in message


def test_map_custom_question_needs_its_text():
    _, message = logic.page_call(logic.predict_map, "/no/such/model", "custom", "  ", "3", "half of six is 3")
    assert "The question is empty" in message


@pytest.mark.parametrize("name", ["/no/such/map-model", "./data/demo/not-trained-yet"])
def test_missing_model_path_names_it_and_says_what_was_expected(name):
    _, message = logic.page_call(logic.predict_map, name, "custom", "What is 1/2 of 6?", "3", "half of six is 3")
    assert f"'{name}' does not exist" in message
    assert "scripts/train_classifier.py" in message and "make demo" in message
    _, message = logic.page_call(logic.map_question_choices, name)
    assert name in message and "Expected" in message


def test_missing_default_models_say_how_to_make_them(tmp_path, monkeypatch):
    for name in ("MISCONCEPTIONS_MAP_MODEL", "MISCONCEPTIONS_EEDI_MODEL", "MISCONCEPTIONS_MAPPING_CSV"):
        monkeypatch.delenv(name, raising=False)
    settings = logic.default_settings(tmp_path / "repo")
    assert settings.map_model == str(tmp_path / "repo" / "data" / "demo" / "map-minilm-cpu")
    _, message = logic.page_call(logic.map_question_choices, settings.map_model)
    assert settings.map_model in message and "make demo" in message
    _, message = logic.page_call(logic.check_eedi_settings, settings.eedi_model, str(MAPPING_CSV))
    assert settings.eedi_model in message and "make demo" in message
    Path(settings.map_model).mkdir(parents=True)  # `make demo` still training: the folder exists, the model not yet
    _, message = logic.page_call(logic.predict_map, settings.map_model, "custom", "What is 1/2 of 6?", "3", "half")
    assert "misconceptions_classifier.json" in message and "still training" in message and "make demo" in message
    monkeypatch.setenv("MISCONCEPTIONS_MAP_MODEL", "org/map-model")
    assert logic.default_settings(tmp_path).map_model == "org/map-model"  # a Space sets Hub ids this way


def test_backend_setting(map_model, monkeypatch):
    monkeypatch.delenv("MISCONCEPTIONS_BACKEND", raising=False)
    assert logic.default_settings().backend == "auto"
    monkeypatch.setenv("MISCONCEPTIONS_BACKEND", "torch")
    assert logic.default_settings().backend == "torch"
    try:
        for backend in ("torch", "onnx", "auto"):
            logic.set_backend(backend)
            assert logic.load_map_classifier(str(map_model)).backend == resolve_backend(backend)
            retriever = logic.load_eedi_retriever(ZERO_SHOT)[0]
            assert getattr(retriever, "backend", "torch") == resolve_backend(backend, task="retriever")
        with pytest.raises(InputError, match="unknown inference backend 'cuda-graphs'"):
            logic.set_backend("cuda-graphs")
    finally:
        logic.set_backend("auto")


def test_unreachable_hub_id_is_a_clear_message():
    _, message = logic.page_call(logic.map_question_choices, "no-such-org/no-such-model")
    assert "'no-such-org/no-such-model'" in message and "could not be downloaded from the Hub" in message


def test_eedi_validation_messages(tmp_path):
    args = ("/no/such/eedi", str(MAPPING_CSV), "What is 2 + 3 x 4?", " 14 ")
    _, message = logic.page_call(logic.predict_eedi, *args, "14")
    assert "same as the correct answer" in message
    _, message = logic.page_call(logic.predict_eedi, *args, "")
    assert "The wrong answer is empty" in message
    _, message = logic.page_call(logic.predict_eedi, *args, "20", "", "", 26)
    assert "from 1 to 25" in message
    _, message = logic.page_call(logic.predict_eedi, *args, "20")
    assert "'/no/such/eedi' does not exist" in message and "scripts/train_retriever.py" in message
    _, message = logic.page_call(logic.predict_eedi, ZERO_SHOT, str(tmp_path / "none.csv"), *args[2:], "20")
    assert "none.csv' does not exist" in message and "misconception_mapping.csv" in message


def test_readable_misconception():
    assert logic.readable_misconception("False_Misconception:Incomplete") == "Incomplete"
    assert logic.readable_misconception("Misconception:Wrong_fraction") == "Wrong_fraction"
    assert logic.readable_misconception("True_Correct:NA").startswith("None")


def test_map_predictions_equal_rank_dataframe(map_model, small_map_dataset):
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    meta_questions = set(load_classifier(str(map_model)).meta["questions"])
    for row in val.head(4).to_dict("records"):
        known = row["QuestionId"] in meta_questions
        table = logic.predict_map(
            str(map_model),
            row["QuestionId"] if known else "custom",
            row["QuestionText"],
            row["MC_Answer"],
            row["StudentExplanation"],
        )
        labels, scores = expected_map(
            map_model,
            row["QuestionId"] if known else "",
            row["QuestionText"],
            row["MC_Answer"],
            row["StudentExplanation"],
        )
        assert table["Label"].tolist() == labels[0]
        assert table["Probability"].tolist() == pytest.approx(scores[0], abs=1e-4)
        assert table["Misconception"].tolist() == [logic.readable_misconception(label) for label in labels[0]]
    # The scores leave the ranking unchanged.
    assert (
        rank_dataframe(load_classifier(str(map_model)), val.head(4))
        == rank_dataframe(load_classifier(str(map_model)), val.head(4), return_scores=True)[0]
    )
    choices = logic.map_question_choices(str(map_model))
    assert {value for _, value in choices} == {"custom", *meta_questions}


def test_eedi_predictions_equal_retrieve_candidates(eedi_case):
    row = eedi_case["row"]
    table = logic.predict_eedi(
        ZERO_SHOT,
        str(MAPPING_CSV),
        row["QuestionText"],
        row["CorrectAnswerText"],
        row["AnswerText"],
        row["ConstructName"],
        row["SubjectName"],
    )
    assert table["MisconceptionId"].tolist() == eedi_case["ids"]
    assert table["Misconception"].tolist() == eedi_case["names"]


# ---------------------------------------------------------------- (b) the page in a real browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not serve {url} within {timeout} s:\n{log.read_text()[-4000:]}")


def _table(page, elem_id: str) -> list[list[str]]:
    """The body rows of a gr.Dataframe as cell texts (Gradio 6 renders them as role=row / role=gridcell)."""
    return page.eval_on_selector_all(
        f"#{elem_id} [role=row]",
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))"
        ".filter(cells => cells.length > 0)",
    )


def _click_and_wait(page, button: str, status: str, timeout: float = 60_000) -> str:
    """Click a button and return the status line once it changes (every step below expects a new message)."""
    before = page.inner_text(f"#{status}")
    page.click(f"#{button}")
    page.wait_for_function(
        "([sel, before]) => { const t = document.querySelector(sel).innerText.trim(); return t && t !== before; }",
        arg=[f"#{status}", before.strip()],
        timeout=timeout,
    )
    return page.inner_text(f"#{status}").strip()


def test_app_in_a_real_browser(map_model, map_row, eedi_case, embedding_cache, tmp_path):
    require = os.environ.get("MISCONCEPTIONS_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        reason = (
            f"the browser test needs {CHROMIUM} (apt-get install chromium) and playwright (pip install playwright)"
        )
        if require:
            pytest.fail(reason + "; MISCONCEPTIONS_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(reason)
    shots = [tmp_path] + (
        [Path(os.environ["MISCONCEPTIONS_SCREENSHOTS"])] if "MISCONCEPTIONS_SCREENSHOTS" in os.environ else []
    )

    def screenshot(page, name: str) -> None:
        page.wait_for_timeout(400)  # let the results table finish fading in
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        for folder in shots[1:]:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / f"{name}.png", folder / f"{name}.png")

    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MISCONCEPTIONS_CACHE": str(embedding_cache),
    }
    command = [sys.executable, "app/app.py", "--map_model", str(map_model), "--eedi_model", ZERO_SHOT]
    command += ["--misconceptions_csv", str(MAPPING_CSV), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as handle:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, server, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 1400})
                page.goto(url)
                page.wait_for_function(
                    "() => document.querySelector('#map-status')?.innerText.includes('known questions')",
                    timeout=60_000,
                )

                # MAP: a real held-out row, its question picked from the model's list.
                page.click("#map-question input")
                page.click(f'#map-question [role=option][aria-label^="{map_row["QuestionId"]}:"]')
                page.wait_for_function(
                    "() => document.querySelector('#map-question-text textarea').value.length > 0", timeout=30_000
                )
                question_text = page.input_value("#map-question-text textarea")
                page.fill("#map-answer textarea", map_row["MC_Answer"])
                page.fill("#map-explanation textarea", map_row["StudentExplanation"])
                status = _click_and_wait(page, "map-submit", "map-status")
                assert "most likely labels" in status, status
                shown = _table(page, "map-results")
                screenshot(page, "map_prediction")
                labels, scores = expected_map(
                    map_model,
                    map_row["QuestionId"],
                    question_text,
                    map_row["MC_Answer"],
                    map_row["StudentExplanation"],
                )
                assert [r[1] for r in shown] == labels[0]
                assert [r[2] for r in shown] == [logic.readable_misconception(label) for label in labels[0]]
                assert [float(r[3]) for r in shown] == pytest.approx(scores[0], abs=1e-4)

                # MAP: bad inputs give a clear message in the page, never a traceback.
                page.fill("#map-explanation textarea", "")
                status = _click_and_wait(page, "map-submit", "map-status")
                assert "The student's explanation is empty" in status, status
                assert _table(page, "map-results") == []
                page.fill("#map-explanation textarea", HUGE)
                status = _click_and_wait(page, "map-submit", "map-status")
                assert "too long" in status and f"{logic.MAX_TEXT_CHARS:,}" in status, status
                screenshot(page, "map_too_long")
                page.fill("#map-model textarea", "/no/such/map-model")
                status = _click_and_wait(page, "map-load", "map-status")
                assert "'/no/such/map-model' does not exist" in status and "Expected" in status, status
                screenshot(page, "map_missing_model")
                assert "Traceback" not in page.content()

                # Eedi: a real labelled wrong answer, retrieved zero-shot.
                page.get_by_role("tab", name="Eedi: diagnose a wrong answer").click()
                row = eedi_case["row"]
                page.fill("#eedi-question textarea", row["QuestionText"])
                page.fill("#eedi-correct textarea", row["CorrectAnswerText"])
                page.fill("#eedi-wrong textarea", row["AnswerText"])
                page.fill("#eedi-construct textarea", row["ConstructName"])
                page.fill("#eedi-subject textarea", row["SubjectName"])
                status = _click_and_wait(page, "eedi-submit", "eedi-status", timeout=90_000)
                assert "misconceptions closest" in status, status
                shown = _table(page, "eedi-results")
                screenshot(page, "eedi_prediction")
                assert [int(r[1]) for r in shown] == eedi_case["ids"]
                assert [r[2] for r in shown] == eedi_case["names"]

                page.fill("#eedi-wrong textarea", row["CorrectAnswerText"])
                status = _click_and_wait(page, "eedi-submit", "eedi-status")
                assert "same as the correct answer" in status, status
                assert "Traceback" not in page.content()
            finally:
                browser.close()
        assert "Traceback" not in log.read_text()  # every failure above was handled, not crashed through
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
