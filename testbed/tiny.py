"""Tiny assets in real formats, for the e2e tests, the benches and the demo.

- a byte-level BPE tokenizer trained with `tokenizers`, saved as a `PreTrainedTokenizerFast` dir;
- a randomly initialised `LlamaForCausalLM` (fixed seed) with the tokenizer's vocabulary, saved
  with `save_pretrained` (safetensors): needs torch, so it is built by the vLLM venv's python
  (`python -m testbed.tiny model --out DIR --tokenizer DIR`);
- `DatasetDict.save_to_disk` bundles, a few hand-written rows each, with the HF builders'
  features, for the real lm_eval tasks arc_easy, blimp_adjunct_island, gsm8k and hellaswag,
  plus the tree's manifest.json.

torch, transformers, tokenizers and datasets are imported inside the functions that need
them, so this module imports in every venv.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common.layout import MANIFEST_NAME, TOKENIZER_DIR_NAME
from tasks.slugs import slug

EOS = "<|endoftext|>"
# A chat template in the usual shape (role markers, end of turn, generation prompt). The model
# dir carries it (vLLM's chat endpoint needs one); the staged tokenizer does not, so tests add
# it where they need it (`add_chat_template`).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SEED = 1234
MAX_LENGTH = 512  # the model's positions and the server's --max-model-len

# --- hand-written rows, in the HF datasets' layouts ------------------------------------------


def _arc(id_: str, question: str, texts: list[str], answer: str) -> dict[str, Any]:
    labels = ["A", "B", "C", "D"][: len(texts)]
    return {
        "id": id_,
        "question": question,
        "choices": {"text": texts, "label": labels},
        "answerKey": answer,
    }


ARC_EASY = {
    "train": [
        _arc(
            "tiny-arc-tr-1",
            "Which object gives off its own light?",
            ["the Moon", "a mirror", "the Sun", "a rock"],
            "C",
        ),
        _arc(
            "tiny-arc-tr-2",
            "What do plants need to make food?",
            ["sunlight", "sand", "plastic", "salt"],
            "A",
        ),
        _arc(
            "tiny-arc-tr-3",
            "Which state of water is ice?",
            ["gas", "solid", "liquid", "plasma"],
            "B",
        ),
    ],
    "validation": [
        _arc(
            "tiny-arc-va-1",
            "Which tool measures temperature?",
            ["a ruler", "a scale", "a thermometer", "a clock"],
            "C",
        ),
        _arc(
            "tiny-arc-va-2",
            "What pulls objects toward the ground?",
            ["gravity", "wind", "light", "sound"],
            "A",
        ),
    ],
    "test": [
        _arc(
            "tiny-arc-te-1",
            "Which animal has feathers?",
            ["a dog", "a robin", "a frog", "a fish"],
            "B",
        ),
        _arc(
            "tiny-arc-te-2",
            "What happens to water when it boils?",
            ["it freezes", "it turns to steam", "it becomes sand", "it glows"],
            "B",
        ),
        _arc(
            "tiny-arc-te-3",
            "Which of these is a source of renewable energy?",
            ["coal", "oil", "wind", "natural gas"],
            "C",
        ),
        _arc(
            "tiny-arc-te-4",
            "Where does a fish get oxygen?",
            ["from the water", "from rocks", "from the sun", "from sand"],
            "A",
        ),
        _arc(
            "tiny-arc-te-5",
            "Which sense do ears give us?",
            ["sight", "taste", "smell", "hearing"],
            "D",
        ),
    ],
}


def _blimp(pair_id: int, good: str, bad: str) -> dict[str, Any]:
    return {
        "sentence_good": good,
        "sentence_bad": bad,
        "field": "syntax",
        "linguistics_term": "island_effects",
        "UID": "adjunct_island",
        "simple_LM_method": True,
        "one_prefix_method": False,
        "two_prefix_method": False,
        "lexically_identical": True,
        "pair_id": pair_id,
    }


BLIMP_ADJUNCT_ISLAND = {
    "train": [
        _blimp(
            0,
            "Who did the teacher call before meeting Anna?",
            "Who did the teacher call Anna before meeting?",
        ),
        _blimp(
            1,
            "What was Mark reading while visiting the museum?",
            "What was Mark reading the museum while visiting?",
        ),
        _blimp(
            2,
            "Who has Lucy thanked after hiring the cook?",
            "Who has Lucy thanked the cook after hiring?",
        ),
        _blimp(
            3,
            "What will the boys paint without cleaning the room?",
            "What will the boys paint the room without cleaning?",
        ),
        _blimp(
            4,
            "Who should Karen hug before leaving the party?",
            "Who should Karen hug the party before leaving?",
        ),
        _blimp(
            5,
            "What did the girls bake after buying the flour?",
            "What did the girls bake the flour after buying?",
        ),
    ]
}


def _gsm(question: str, steps: str, answer: int) -> dict[str, str]:
    return {"question": question, "answer": f"{steps}\n#### {answer}"}


GSM8K_MAIN = {
    "train": [
        _gsm(
            "Tom has 3 apples and buys 4 more. How many apples does he have?",
            "3 + 4 = <<3+4=7>>7",
            7,
        ),
        _gsm("A box holds 6 eggs. How many eggs are in 2 boxes?", "6 * 2 = <<6*2=12>>12", 12),
        _gsm(
            "Sara had 10 pens and gave away 4. How many pens are left?", "10 - 4 = <<10-4=6>>6", 6
        ),
        _gsm(
            "Each bike has 2 wheels. How many wheels do 5 bikes have?", "2 * 5 = <<2*5=10>>10", 10
        ),
        _gsm(
            "Ben reads 8 pages a day. How many pages does he read in 3 days?",
            "8 * 3 = <<8*3=24>>24",
            24,
        ),
        _gsm(
            "A class of 20 splits into 4 equal teams. How big is each team?",
            "20 / 4 = <<20/4=5>>5",
            5,
        ),
    ],
    "test": [
        _gsm(
            "Mia has 5 cats and adopts 2 more. How many cats does she have?",
            "5 + 2 = <<5+2=7>>7",
            7,
        ),
        _gsm("A pack has 4 cards. How many cards are in 3 packs?", "4 * 3 = <<4*3=12>>12", 12),
        _gsm("Leo had 9 coins and spent 5. How many coins are left?", "9 - 5 = <<9-5=4>>4", 4),
    ],
}


def _hellaswag(
    ind: int, label: str, ctx_a: str, ctx_b: str, endings: list[str], split: str, gold: int
) -> dict[str, Any]:
    return {
        "ind": ind,
        "activity_label": label,
        "ctx_a": ctx_a,
        "ctx_b": ctx_b,
        "ctx": f"{ctx_a} {ctx_b}".strip(),
        "endings": endings,
        "source_id": f"tiny~{ind}",
        "split": split,
        "split_type": "indomain",
        "label": str(gold),  # a string, as the HF builder writes it
    }


HELLASWAG = {
    "train": [
        _hellaswag(
            1,
            "Making tea",
            "A man fills a kettle with water.",
            "he",
            [
                "puts it on the stove.",
                "throws it out the window.",
                "paints it blue.",
                "sings to the cat.",
            ],
            "train",
            0,
        ),
        _hellaswag(
            2,
            "Walking the dog",
            "A woman clips a leash to a dog.",
            "they",
            ["walk out of the door.", "fly to the moon.", "eat the leash.", "read a newspaper."],
            "train",
            0,
        ),
    ],
    "validation": [
        _hellaswag(
            3,
            "Washing dishes",
            "A boy stands at the sink with a sponge.",
            "he",
            [
                "drops the sponge on the roof.",
                "scrubs a plate under the tap.",
                "drives a bus.",
                "plants a tree.",
            ],
            "val",
            1,
        ),
        _hellaswag(
            4,
            "Riding a bike",
            "A girl puts on a helmet next to her bike.",
            "she",
            [
                "eats the helmet.",
                "swims across the lake.",
                "gets on and pedals away.",
                "bakes a cake.",
            ],
            "val",
            2,
        ),
        _hellaswag(
            5,
            "[header] How to plant a seed",
            "[title] Dig a small hole in the soil.",
            "then",
            [
                "forget the seed.",
                "paint the hole.",
                "sell the soil.",
                "drop the seed in and cover it.",
            ],
            "val",
            3,
        ),
    ],
    "test": [],  # lm_eval's hellaswag has test_split: null; the HF dataset has one (unlabelled)
}

# lm_eval 0.4.13 task -> (dataset_path, dataset_name, rows per split, features name)
TASKS: dict[str, tuple[str, str | None, dict[str, list[dict[str, Any]]], str]] = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", ARC_EASY, "ai2_arc"),
    "blimp_adjunct_island": ("nyu-mll/blimp", "adjunct_island", BLIMP_ADJUNCT_ISLAND, "blimp"),
    "gsm8k": ("openai/gsm8k", "main", GSM8K_MAIN, "gsm8k"),
    "hellaswag": ("Rowan/hellaswag", None, HELLASWAG, "hellaswag"),
}

CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model reads short questions and picks an
answer. Scientists measure temperature, mass and time; students ask how plants grow, why ice
melts and where rivers flow. Numbers such as 0 1 2 3 4 5 6 7 8 9 10 12 20 24 100 appear in word
problems: add, subtract, multiply and divide. Question: Answer: The answer is. Who, what, when,
where, why and how begin many questions. People cook, walk, read, write, paint and play games.
"""


def _features(kind: str) -> Any:
    from datasets import Features, Sequence, Value

    string = Value("string")
    return {
        "ai2_arc": Features(
            {
                "id": string,
                "question": string,
                "choices": Sequence({"text": string, "label": string}),
                "answerKey": string,
            }
        ),
        "blimp": Features(
            {
                **{
                    k: string
                    for k in ("sentence_good", "sentence_bad", "field", "linguistics_term", "UID")
                },
                **{
                    k: Value("bool")
                    for k in (
                        "simple_LM_method",
                        "one_prefix_method",
                        "two_prefix_method",
                        "lexically_identical",
                    )
                },
                "pair_id": Value("int32"),
            }
        ),
        "gsm8k": Features({"question": string, "answer": string}),
        "hellaswag": Features(
            {
                "ind": Value("int32"),
                **{k: string for k in ("activity_label", "ctx_a", "ctx_b", "ctx")},
                "endings": Sequence(string),
                **{k: string for k in ("source_id", "split", "split_type", "label")},
            }
        ),
    }[kind]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def training_text() -> list[str]:
    """What the tokenizer learns from: the corpus above plus every string of the rows."""
    rows = [row for _, _, splits, _ in TASKS.values() for split in splits.values() for row in split]
    return CORPUS.splitlines() + [s for row in rows for s in _strings(row)]


# --- builders ------------------------------------------------------------------------------


def build_tokenizer(out: Path, vocab_size: int = 2048) -> Path:
    """A byte-level BPE tokenizer (any text encodes) as a PreTrainedTokenizerFast dir.

    The config files are written by hand with `tokenizer_class: PreTrainedTokenizerFast`:
    transformers 5's `save_pretrained` writes `TokenizersBackend`, which 4.x cannot load.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n")
    return out


def build_model(out: Path, tokenizer_dir: Path, seed: int = SEED) -> Path:
    """A random LlamaForCausalLM over the tokenizer's vocab (needs torch: the vLLM venv)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: a size vLLM's CPU attention supports
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
        # Wider than the default 0.02 so choices' loglikelihoods differ clearly: scores
        # then do not hinge on float noise between two engines.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # vLLM reads the tokenizer from the model dir.
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    add_chat_template(out)
    return out


def add_chat_template(tokenizer_dir: Path) -> Path:
    """chat_template.jinja, where transformers (and so lm_eval and vLLM) reads it from."""
    (tokenizer_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return tokenizer_dir


def build_model_subprocess(out: Path, tokenizer_dir: Path) -> Path:
    """`build_model` in the vLLM venv's python (it has torch; our venv need not)."""
    from testbed.modelserver import vllm_python, vllm_python_env

    cmd = [
        str(vllm_python()),
        "-m",
        "testbed.tiny",
        "model",
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
    ]
    proc = subprocess.run(cmd, env=vllm_python_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        from common.errors import AirgapError

        raise AirgapError(
            f"building the tiny model failed:\n{proc.stderr[-3000:]}", "see the error above"
        )
    return out


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("datasets", "tokenizers", "transformers", "lm_eval"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def build_bundles(root: Path, tasks: list[str] | None = None) -> dict[str, list[str]]:
    """One bundle per task under root/<slug>; returns task -> slugs (for the manifest)."""
    from datasets import Dataset, DatasetDict
    from datasets.utils import logging as ds_logging

    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # a dozen "Saving the dataset" bars say nothing
    written: dict[str, list[str]] = {}
    for task in tasks or list(TASKS):
        path, name, splits, kind = TASKS[task]
        features = _features(kind)
        dd = DatasetDict(
            {
                split: Dataset.from_dict(
                    {k: [r[k] for r in rows] for k in features}, features=features
                )
                for split, rows in splits.items()
            }
        )
        target = root / slug(path, name)
        if target.exists():
            shutil.rmtree(target)
        # num_shards=1: otherwise an empty split gets no arrow file and does not load.
        dd.save_to_disk(str(target), num_shards=dict.fromkeys(dd, 1))
        written[task] = [target.name]
    if bars:
        ds_logging.enable_progress_bar()
    return written


def build_test_data(root: Path) -> Path:
    """A complete offline /test_data tree: bundles, tokenizer/ and manifest.json."""
    from common.manifest import build_manifest

    root.mkdir(parents=True, exist_ok=True)
    tasks = build_bundles(root)
    build_tokenizer(root / TOKENIZER_DIR_NAME)
    manifest = build_manifest(root, versions=_versions(), tasks=tasks, tokenizer=TOKENIZER_DIR_NAME)
    manifest.dump(root / MANIFEST_NAME)
    return root


def read_only(root: Path) -> None:
    """chmod a-w over a tree, as EvalHub mounts /test_data (root ignores it; tests that run
    as root also compare the tree before and after)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = Path(dirpath) / name
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)


@dataclass(frozen=True)
class TinyAssets:
    test_data: Path  # bundles + tokenizer/ + manifest.json
    model: Path  # save_pretrained dir (tokenizer files included)

    @property
    def tokenizer(self) -> Path:
        return self.test_data / TOKENIZER_DIR_NAME


def build_all(root: Path) -> TinyAssets:
    """Everything the demo and the e2e tests need, under root/{test_data,model}."""
    test_data = build_test_data(root / "test_data")
    model = build_model_subprocess(root / "model", test_data / TOKENIZER_DIR_NAME)
    return TinyAssets(test_data, model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m testbed.tiny", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("tokenizer", help="train and save the tokenizer").add_argument(
        "--out", type=Path, required=True
    )
    sub.add_parser("test-data", help="bundles + tokenizer + manifest").add_argument(
        "--out", type=Path, required=True
    )
    model = sub.add_parser("model", help="the random Llama (run with the vLLM venv's python)")
    model.add_argument("--out", type=Path, required=True)
    model.add_argument("--tokenizer", type=Path, required=True)
    sub.add_parser("all", help="test_data/ and model/ under --out").add_argument(
        "--out", type=Path, required=True
    )
    args = ap.parse_args(argv)
    if args.what == "tokenizer":
        print(build_tokenizer(args.out))
    elif args.what == "test-data":
        print(build_test_data(args.out))
    elif args.what == "model":
        print(build_model(args.out, args.tokenizer))
    else:
        print(build_all(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
