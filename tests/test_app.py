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
"""The teacher-facing app: its logic (operator settings, validation, predictions equal to the package's), then one
real server: its API through gradio_client under hostile input (server paths, Hub ids, 1 MB, markup; a canary
environment variable must never come back), and the page in a headless Chromium driven by Playwright, on a tiny
trained MiniLM classifier and the zero-shot packaged retriever."""

import dataclasses
import http.client
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest

from misconceptions import InputError
from misconceptions import app as logic
from misconceptions.classifier import load_classifier, rank_dataframe
from misconceptions.eedi import pivot_wrong_answers, read_misconceptions_csv, read_questions_csv, write_wide_csv
from misconceptions.model_utils import resolve_model_path
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
MARKUP = [
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "<script>alert(1)</script>",
    "**bold** $$x^2$$ `code` <b>b</b>",
]
# Things a visitor might type to reach the server: paths, a file URL, a Hub id, 1 MB of text.
HOSTILE = ["/proc/self/environ", "/etc/passwd", "../../../../etc/passwd", "file:///proc/self/environ"]
HOSTILE += ["sentence-transformers/all-mpnet-base-v2", "A" * 1_000_000, *MARKUP]
CANARY = f"canary-{uuid.uuid4().hex}"
MAP_LABEL = "map-tiny"


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
def mapping_csv(tmp_path_factory) -> Path:
    """The real misconception list plus names that are markup: model data the page must show as text."""
    if not (EEDI_TRAIN.is_file() and MAPPING_CSV.is_file()):
        pytest.skip(f"{EEDI_TRAIN} or {MAPPING_CSV} not found (set MISCONCEPTIONS_DATA)")
    mapping = pd.read_csv(MAPPING_CSV)
    extra = pd.DataFrame({"MisconceptionId": range(90_000, 90_000 + len(MARKUP)), "MisconceptionName": MARKUP})
    path = tmp_path_factory.mktemp("mapping") / "misconception_mapping.csv"
    pd.concat([mapping, extra]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def settings(map_model, mapping_csv) -> logic.AppSettings:
    return logic.AppSettings(
        logic.parse_model_specs(f"{MAP_LABEL}={map_model}", "test"),
        logic.parse_model_specs(ZERO_SHOT, "test"),
        str(mapping_csv),
    )


@pytest.fixture(scope="module")
def served(settings) -> logic.ServedModels:
    return logic.ServedModels.load(settings)


@pytest.fixture(scope="module")
def map_row(small_map_dataset) -> dict:
    """A real held-out MAP row, preferably one labelled with a misconception."""
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    misconception = val[val["Category"] == "False_Misconception"]
    return (misconception if len(misconception) else val).iloc[0].to_dict()


@pytest.fixture(scope="module")
def eedi_case(tmp_path_factory, mapping_csv) -> dict:
    """A real labelled Eedi wrong answer and the package's own top-10 for it (retrieve_candidates on its CSV)."""
    misconceptions = read_misconceptions_csv(mapping_csv)
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
    retrieve_candidates(model_dir, str(csv), str(mapping_csv), 10, backend="auto")
    candidates, _, _ = retrieve_candidates(model_dir, str(csv), str(mapping_csv), 10, batch_size=1, backend="auto")
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


# ---------------------------------------------------------------- (a) operator settings and the logic


def test_model_specs_show_labels_never_server_paths(tmp_path):
    folder = tmp_path / "models" / "map-minilm-cpu"
    folder.mkdir(parents=True)
    assert logic.parse_model_spec(str(folder), "s") == logic.ModelSpec("map-minilm-cpu", str(folder))
    assert logic.parse_model_spec("org/map-model@v2", "s").label == "org/map-model@v2"
    assert logic.parse_model_spec(ZERO_SHOT, "s").label == ZERO_SHOT
    assert logic.parse_model_spec(f"Best model={folder}", "s") == logic.ModelSpec("Best model", str(folder))
    assert logic.parse_model_spec("./data/demo/run/", "s").label == "run"
    with pytest.raises(InputError, match="label '<b>' must be"):
        logic.parse_model_spec(f"<b>={folder}", "s")
    with pytest.raises(InputError, match="given twice"):
        logic.parse_model_specs([f"a={folder}", f"a={tmp_path}"], "--map_model")
    two = logic.parse_model_specs(f"a={folder},b={tmp_path}", "MISCONCEPTIONS_MAP_MODEL")
    with pytest.raises(InputError, match="2 MAP models given.*--allow_model_choice"):
        logic.AppSettings(two, [], "")
    assert len(logic.AppSettings(two, [], "", allow_model_choice=True).map_models) == 2


def test_environment_settings(monkeypatch, tmp_path):
    for name in ("MISCONCEPTIONS_MAP_MODEL", "MISCONCEPTIONS_EEDI_MODEL", "MISCONCEPTIONS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    settings = logic.default_settings(tmp_path / "repo")
    assert settings.map_models == [logic.ModelSpec("map-minilm-cpu", str(tmp_path / "repo/data/demo/map-minilm-cpu"))]
    assert settings.backend == "auto" and not settings.allow_model_choice and settings.max_queue == 32
    monkeypatch.setenv("MISCONCEPTIONS_MAP_MODEL", "Small=org/map-small,Large=org/map-large")
    monkeypatch.setenv("MISCONCEPTIONS_ALLOW_MODEL_CHOICE", "1")
    monkeypatch.setenv("MISCONCEPTIONS_REQUEST_TIMEOUT", "5")
    settings = logic.default_settings(tmp_path)
    assert [m.label for m in settings.map_models] == ["Small", "Large"] and settings.request_timeout == 5


def test_startup_fails_in_one_line_on_models_that_cannot_be_had(tmp_path, mapping_csv, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "data" / "demo" / "map-minilm-cpu"
    with pytest.raises(InputError, match=f"MAP model '{missing}' not found: {missing} does not exist"):
        logic.ServedModels.load(logic.AppSettings([logic.ModelSpec("m", str(missing))], [], str(mapping_csv)))
    missing.mkdir(parents=True)  # `make demo` still training: the folder exists, the model not yet
    with pytest.raises(InputError, match="has no misconceptions_classifier.json.*make demo"):
        logic.ServedModels.load(logic.AppSettings([logic.ModelSpec("m", str(missing))], [], str(mapping_csv)))
    with pytest.raises(InputError, match="'no-such-org/no-such-model' is neither a folder here.*offline"):
        logic.ServedModels.load(
            logic.AppSettings([], [logic.ModelSpec("e", "no-such-org/no-such-model")], str(mapping_csv))
        )
    with pytest.raises(InputError, match="misconception list .*none.csv does not exist"):
        logic.ServedModels.load(logic.AppSettings([], [logic.ModelSpec("e", ZERO_SHOT)], str(tmp_path / "none.csv")))


def test_the_page_names_the_models_with_their_task_and_metrics(served, map_model):
    note = logic.ServedModels.model_note(served, "map", MAP_LABEL)
    metrics = json.loads((map_model / "all_results.json").read_text())
    assert note.startswith("**Model:** map\\-tiny (MAP classification\\: ")
    assert f"validation MAP\\@3 {metrics['eval_map@3']:.4f}".replace(".", "\\.") in note
    assert str(map_model) not in note
    assert "2\\,591 misconceptions" in logic.ServedModels.model_note(served, "eedi", ZERO_SHOT)


@pytest.mark.parametrize(
    ("explanation", "needle"),
    [("", "The student's explanation is empty"), ("   \n ", "The student's explanation is empty"), (HUGE, "too long")],
)
def test_map_validation_messages(served, explanation, needle):
    table, message = logic.page_call(
        logic.predict_map, served, MAP_LABEL, "custom", "What is 1/2 of 6?", "3", explanation
    )
    assert table is None and logic.markdown_text(needle) in message and "Traceback" not in message
    if needle == "too long":
        assert logic.markdown_text(f"{len(HUGE.strip()):,} characters") in message


def test_unknown_models_questions_and_values_are_refused_without_echo(served):
    for label in ("/etc/passwd", "org/other-model", None, 7):
        _, message = logic.page_call(logic.predict_map, served, label, "custom", "What is 1/2 of 6?", "3", "half")
        assert "not one this server offers" in message and "passwd" not in message
    _, message = logic.page_call(logic.predict_map, served, MAP_LABEL, "/etc/passwd", "q", "3", "half")
    assert "not one the MAP model was trained on" in message and "passwd" not in message
    _, message = logic.page_call(logic.predict_map, served, MAP_LABEL, "custom", "  ", "3", "half of six is 3")
    assert "The question is empty" in message
    for k in (0, 11, 2.5, "3; rm -rf /", True, None):
        _, message = logic.page_call(logic.predict_map, served, MAP_LABEL, "custom", "q", "3", "half", k)
        assert "whole number from 1 to 10" in message and "rm" not in message
    _, message = logic.page_call(logic.predict_map, served, MAP_LABEL, "custom", ["q"], "3", "half")
    assert "must be text" in message


def test_eedi_validation_messages(served):
    args = (served, ZERO_SHOT, "What is 2 + 3 x 4?", " 14 ")
    _, message = logic.page_call(logic.predict_eedi, *args, "14")
    assert "same as the correct answer" in message
    _, message = logic.page_call(logic.predict_eedi, *args, "")
    assert "The wrong answer is empty" in message
    _, message = logic.page_call(logic.predict_eedi, *args, "20", "", "", 26)
    assert "from 1 to 25" in message
    _, message = logic.page_call(logic.predict_eedi, served, "/no/such/eedi", *args[2:], "20")
    assert "not one this server offers" in message and "/no/such" not in message


def test_failures_and_time_outs_show_our_message_never_the_exception(caplog):
    def leaky():
        raise FileNotFoundError("/srv/secret/path/model.safetensors: root:x:0:0")

    _, message = logic.page_call(leaky, what="the MAP prediction")
    assert message.startswith("**Something went wrong during the MAP prediction.** Reference ")
    assert "secret" not in message and "root" not in message and "FileNotFoundError" not in message
    assert "secret/path" in caplog.text  # the operator's log has it
    _, message = logic.page_call(time.sleep, 2, what="the Eedi search", timeout=0.2)
    assert "**The Eedi search took too long** (over 0.2 s)" in message and logic.BUSY in message


def test_markdown_text_escapes_every_markup():
    for text in MARKUP:
        escaped = logic.markdown_text(text)
        assert all(f"\\{c}" in escaped for c in "<>[]()$`*" if c in text)


def test_readable_misconception():
    assert logic.readable_misconception("False_Misconception:Incomplete") == "Incomplete"
    assert logic.readable_misconception("Misconception:Wrong_fraction") == "Wrong_fraction"
    assert logic.readable_misconception("True_Correct:NA").startswith("None")


def test_map_predictions_equal_rank_dataframe(served, map_model, small_map_dataset):
    val = pd.read_csv(small_map_dataset / "validation.csv", dtype=str, keep_default_na=False)
    meta_questions = set(load_classifier(str(map_model)).settings.questions)
    for row in val.head(4).to_dict("records"):
        known = row["QuestionId"] in meta_questions
        table, model_input = logic.predict_map(
            served,
            MAP_LABEL,
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
        assert row["StudentExplanation"].strip() in model_input
    choices = logic.map_question_choices(served, MAP_LABEL)
    assert {value for _, value in choices} == {"custom", *meta_questions}


def test_eedi_predictions_equal_retrieve_candidates(served, eedi_case):
    row = eedi_case["row"]
    table, query = logic.predict_eedi(
        served,
        ZERO_SHOT,
        row["QuestionText"],
        row["CorrectAnswerText"],
        row["AnswerText"],
        row["ConstructName"],
        row["SubjectName"],
    )
    assert table["MisconceptionId"].tolist() == eedi_case["ids"]
    assert table["Misconception"].tolist() == eedi_case["names"]
    assert row["AnswerText"] in query


def _page_module():
    spec = importlib.util.spec_from_file_location("app_page", REPO / "app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("allow", [False, True])
def test_model_choice_is_a_dropdown_of_the_operator_s_models(served, settings, map_model, allow):
    """With --allow_model_choice the model box is a dropdown of the operator's labels; without it, fixed. Either way
    the page's config holds labels, never the models' folders."""
    two = logic.ServedModels(
        dataclasses.replace(settings, allow_model_choice=allow, map_models=settings.map_models * 2 if allow else []),
        map_models={"Small": served.map_models[MAP_LABEL], "Large": served.map_models[MAP_LABEL]}
        if allow
        else dict(served.map_models),
        eedi_models=served.eedi_models,
        misconceptions=served.misconceptions,
    )
    config = _page_module().build_demo(two).get_config_file()
    box = next(c for c in config["components"] if c["props"].get("elem_id") == "map-model")
    labels = ["Small", "Large"] if allow else [MAP_LABEL]
    assert [choice[0] for choice in box["props"]["choices"]] == labels
    assert box["props"]["interactive"] is allow
    assert str(map_model) not in json.dumps(config) and str(REPO) not in json.dumps(config)


# ---------------------------------------------------------------- (b) one real server: its API and its page


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
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


@pytest.fixture(scope="module")
def server(map_model, mapping_csv, embedding_cache, tmp_path_factory):
    """app/app.py on loopback, as an operator starts it, with a canary secret in its environment."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "MISCONCEPTIONS_CACHE": str(embedding_cache),
        "MISCONCEPTIONS_TEST_CANARY": CANARY,
    }
    command = [sys.executable, "app/app.py", "--map_model", f"{MAP_LABEL}={map_model}", "--eedi_model", ZERO_SHOT]
    command += ["--misconceptions_csv", str(mapping_csv), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, process, log)
        yield {"url": url, "log": log, "secrets": [CANARY, str(map_model), str(mapping_csv), str(REPO)]}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in [*secrets, "root:x:0:0", "HF_HUB_OFFLINE="] if s in text]


def test_the_api_obeys_the_page_s_validation_and_reveals_nothing(server):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/predict_map", "/predict_eedi"}  # the page's plumbing is private
    good_map = [MAP_LABEL, "custom", "What is 1/2 of 6?", "3", "half of six is three", 3]
    good_eedi = [ZERO_SHOT, "What is 2 + 3 x 4?", "14", "20", "", "", 10]
    loads_before = server["log"].read_text().count("Loading the")
    calls = 0
    for endpoint, good in (("/predict_map", good_map), ("/predict_eedi", good_eedi)):
        table, _, status = client.predict(*good, api_name=endpoint)
        assert len(table["data"]) >= 3 and "best first" in status
        for field in range(len(good)):
            for payload in HOSTILE:
                args = list(good)
                args[field] = payload
                try:
                    result = client.predict(*args, api_name=endpoint)
                    text = json.dumps(result)
                except Exception as err:  # noqa: BLE001 (Gradio refused the value itself: a dropdown, a slider)
                    text = str(err)
                calls += 1
                assert not _leaks(text, server["secrets"]), (endpoint, field, payload[:40], text[:500])
                if payload.startswith("A" * 1000):  # refused: too long, not a choice, not a number; never served
                    assert "best first" not in text and (
                        "too long" in text or "not in the list" in text or field == len(good) - 1  # the slider
                    )
    assert calls == len(HOSTILE) * (len(good_map) + len(good_eedi))
    # No request made the server load (or download) a model of its own choosing.
    assert server["log"].read_text().count("Loading the") == loads_before
    # Gradio's file routes do not serve server files either.
    for path in ("/gradio_api/file=/proc/self/environ", "/gradio_api/file=/etc/passwd", "/file=/etc/passwd"):
        try:
            with urllib.request.urlopen(server["url"].rstrip("/") + path, timeout=10) as response:
                body = response.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            assert err.code in (403, 404), (path, err.code)
        assert not _leaks(body, server["secrets"]), path
    with urllib.request.urlopen(server["url"].rstrip("/") + "/config", timeout=10) as response:
        assert not _leaks(response.read().decode(), server["secrets"])
    # A body over the server's limit (2 MiB) is refused before it is read: the headers alone get the 413 (sending the
    # body too races the refusal, which closes the connection mid-upload).
    host, port = server["url"].split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/gradio_api/queue/join")
    connection.putheader("Content-Type", "text/plain")
    connection.putheader("Content-Length", str(3 * 1024 * 1024))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()


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


def _no_markup_ran(page) -> None:
    """No element the payloads would have made exists: they were shown as text."""
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator("#map-results script, #eedi-results script, #map-status script, #eedi-status b").count() == 0


def test_app_in_a_real_browser(server, map_model, map_row, eedi_case, tmp_path):
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

    dialogs: list[str] = []
    tracebacks = server["log"].read_text().count("Traceback")  # the API test's refused values were logged
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(server["url"])
            page.wait_for_function(
                "() => document.querySelector('#map-model-note')?.innerText.includes('MAP classification')",
                timeout=60_000,
            )
            assert "map-tiny" in page.inner_text("#map-model-note")
            assert page.locator("#map-model input").is_disabled()  # the operator's model, no choice

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
                map_model, map_row["QuestionId"], question_text, map_row["MC_Answer"], map_row["StudentExplanation"]
            )
            assert [r[1] for r in shown] == labels[0]
            assert [r[2] for r in shown] == [logic.readable_misconception(label) for label in labels[0]]
            assert [float(r[3]) for r in shown] == pytest.approx(scores[0], abs=1e-4)

            # MAP: markup in every text field comes back as the text typed, and runs nothing.
            payload = " ".join(MARKUP)
            page.fill("#map-answer textarea", MARKUP[0])
            page.fill("#map-explanation textarea", payload)
            page.click("#map-submit")  # the status line stays the same; the text the model read changes
            page.wait_for_function(
                "(p) => document.querySelector('#map-input textarea').value.includes(p)", arg=MARKUP[0]
            )
            assert "most likely labels" in page.inner_text("#map-status")
            assert payload in page.input_value("#map-input textarea")
            screenshot(page, "map_markup")
            _no_markup_ran(page)

            # MAP: bad inputs give a clear message in the page, never a traceback.
            page.fill("#map-explanation textarea", "")
            status = _click_and_wait(page, "map-submit", "map-status")
            assert "The student's explanation is empty" in status, status
            assert _table(page, "map-results") == []
            page.fill("#map-explanation textarea", HUGE)
            status = _click_and_wait(page, "map-submit", "map-status")
            assert "too long" in status and f"{logic.MAX_TEXT_CHARS:,}" in status, status
            screenshot(page, "map_too_long")
            assert "Traceback" not in page.content()

            # Eedi: a real labelled wrong answer, retrieved zero-shot.
            page.get_by_role("tab", name="Eedi: diagnose a wrong answer").click()
            assert "2,591 misconceptions" in page.inner_text("#eedi-model-note")
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

            # Eedi: markup as the question and the wrong answer finds the markup names of the list, shown as text in
            # the table. (With the real question, construct and subject in the query, where the markup names rank
            # depends on the CPU's int8 kernels: 5th on one machine, below the 20 rows shown on another.)
            page.fill("#eedi-question textarea", payload)
            page.fill("#eedi-wrong textarea", payload)
            page.fill("#eedi-construct textarea", "")
            page.fill("#eedi-subject textarea", "")
            page.fill("#eedi-top-k input[type=number]", "25")
            page.press("#eedi-top-k input[type=number]", "Enter")
            page.click("#eedi-submit")
            page.wait_for_function(
                "(p) => document.querySelector('#eedi-input textarea').value.includes(p)", arg=MARKUP[0]
            )
            status = page.inner_text("#eedi-status")
            assert "The 25 misconceptions closest" in status, status
            # The table re-renders after the status and query boxes (later on a slow CPU): wait for the new rows.
            page.wait_for_function(
                "(names) => names.some(n => document.querySelector('#eedi-results').innerText.includes(n))",
                arg=MARKUP,
                timeout=30_000,
            )
            names = [r[2] for r in _table(page, "eedi-results")]
            assert [name for name in MARKUP if name in names], names
            assert payload in page.input_value("#eedi-input textarea")
            screenshot(page, "eedi_markup")
            _no_markup_ran(page)

            page.fill("#eedi-question textarea", row["QuestionText"])
            page.fill("#eedi-wrong textarea", row["CorrectAnswerText"])
            status = _click_and_wait(page, "eedi-submit", "eedi-status")
            assert "same as the correct answer" in status, status
            content = page.content()
            assert "Traceback" not in content and not _leaks(content, server["secrets"])
        finally:
            browser.close()
    assert dialogs == []  # no payload ever ran
    # Every failure above was handled, not crashed through.
    assert server["log"].read_text().count("Traceback") == tracebacks
