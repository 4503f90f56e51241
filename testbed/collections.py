"""Tiny bundles for the lm_eval benchmarks EvalHub's collections name, in each dataset's real
schema (the Hub datasets' features and splits, as the 0.4.13 task YAMLs and utils read them).

One `Schema` per dataset: its features and a row maker; `build_collection_bundles` asks the
task plan which bundles (slug, config name, splits) the tasks need and writes each one with
`DatasetDict.save_to_disk`, so a group (leaderboard_bbh's 24 configs, mmlu_cot_llama's 57)
costs one table entry. Also a tiny punkt_tab (nltk's tab format, trained here with nltk's
PunktTrainer): what ifeval's sentence counting loads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The benchmarks of eval-hub's config/collections/*.yaml that lm_eval 0.4.13 has.
COLLECTION_BENCHMARKS = [
    "leaderboard_ifeval",
    "leaderboard_bbh",
    "leaderboard_gpqa",
    "leaderboard_mmlu_pro",
    "leaderboard_musr",
    "leaderboard_math_hard",
    "ifeval",
    "gsm8k_platinum_cot_llama",
    "mmlu_cot_llama",
    "truthfulqa_mc1",
    "toxigen",
    "winogender",
    "crows_pairs_english",
    "bbq",
    "ethics_cm",
    "bigbench_hhh_alignment_multiple_choice",
]

ROWS = 2  # per split: a couple of docs per task keeps a run of all 16 short

Row = dict[str, Any]
# (config name, split, row number, the leaf's task config) -> one row
RowMaker = Callable[[str | None, str, int, dict[str, Any]], Row]


@dataclass(frozen=True)
class Schema:
    features: Callable[[], Any]  # -> datasets.Features
    row: RowMaker
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows, where ROWS is too few


def _v(dtype: str = "string") -> Any:
    from datasets import Value

    return Value(dtype)


def _list(inner: Any) -> Any:
    from datasets import List

    return List(inner)


def _features(**fields: Any) -> Any:
    from datasets import Features

    return Features(fields)


# --- IFEval (google/IFEval, wis-k/instruction-following-eval) --------------------------------

_IFEVAL_INT_KWARGS = [
    "num_highlights",
    "num_words",
    "num_placeholders",
    "num_bullets",
    "num_sections",
    "capital_frequency",
    "num_paragraphs",
    "let_frequency",
    "frequency",
    "num_sentences",
    "nth_paragraph",
]
_IFEVAL_STR_KWARGS = [
    "relation",
    "prompt_to_repeat",
    "section_spliter",
    "capital_relation",
    "language",
    "let_relation",
    "letter",
    "end_phrase",
    "keyword",
    "postscript_marker",
    "first_word",
]
_IFEVAL_LIST_KWARGS = ["keywords", "forbidden_words"]


def _ifeval_features() -> Any:
    kwargs = (
        {k: _v("int64") for k in _IFEVAL_INT_KWARGS}
        | {k: _v() for k in _IFEVAL_STR_KWARGS}
        | {k: _list(_v()) for k in _IFEVAL_LIST_KWARGS}
    )
    return _features(
        key=_v("int64"),
        prompt=_v(),
        instruction_id_list=_list(_v()),
        kwargs=_list(kwargs),
    )


def _ifeval_kwargs(**set_: Any) -> Row:
    empty: Row = dict.fromkeys(_IFEVAL_INT_KWARGS + _IFEVAL_STR_KWARGS + _IFEVAL_LIST_KWARGS)
    return empty | set_


def _ifeval_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    # number_sentences counts with nltk's punkt_tab, response_language with langdetect
    return {
        "key": 1000 + i,
        "prompt": f"Write {i + 2} short sentences about rivers, in English, without commas.",
        "instruction_id_list": [
            "length_constraints:number_sentences",
            "language:response_language",
            "punctuation:no_comma",
        ],
        "kwargs": [
            _ifeval_kwargs(num_sentences=i + 2, relation="at least"),
            _ifeval_kwargs(language="en"),
            _ifeval_kwargs(),
        ],
    }


# --- multiple choice and QA sets ---------------------------------------------------------------


def _bbh_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    choices = cfg["doc_to_choice"]  # the target must be one of the task's choice strings
    return {"input": f"{config} question {i}: which is it?", "target": choices[i % len(choices)]}


_GPQA_TEXT = [
    "Pre-Revision Question",
    "Pre-Revision Correct Answer",
    "Pre-Revision Incorrect Answer 1",
    "Pre-Revision Incorrect Answer 2",
    "Pre-Revision Incorrect Answer 3",
    "Pre-Revision Explanation",
    "Self-reported question-writing time (minutes)",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Explanation",
    "Revision Comments (from Question Writer)",
    "Subdomain",
    "Writer's Difficulty Estimate",
    "Extra Revised Question",
    "Extra Revised Explanation",
    "Extra Revised Correct Answer",
    "Extra Revised Incorrect Answer 1",
    "Extra Revised Incorrect Answer 2",
    "Extra Revised Incorrect Answer 3",
    "Non-Expert Validator Accuracy",
    "Majority Non-Expert Vals Incorrect",
    "Expert Validator Accuracy",
    "Record ID",
    "High-level domain",
    "Question Writer",
    "Feedback_EV_1",
    "Validator Revision Suggestion_EV_1",
    "Is First Validation_EV_1",
    "Post hoc agreement_EV_1",
    "Sufficient Expertise?_EV_1",
    "Understand the question?_EV_1",
    "Question Difficulty_EV_1",
    "Validator Answered Correctly_EV_1",
    "Self-reported time (minutes)_EV_1",
    "Probability Correct_EV_1",
    "Manual Correctness Adjustment_EV_1",
    "Expert Validator_EV_1",
]


def _gpqa_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    row: Row = dict.fromkeys(_GPQA_TEXT, "")
    return row | {
        "Question": f"[{config}] What is the charge of an electron ({i})?",
        "Correct Answer": "negative",
        "Incorrect Answer 1": "positive",
        "Incorrect Answer 2": "neutral [title] none",
        "Incorrect Answer 3": "it varies",
        "Record ID": f"rec{i}",
        "High-level domain": "Physics",
    }


def _mmlu_pro_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    options = ["two", "three", "four", "five"]
    return {
        "question_id": i + (100 if split == "test" else 0),
        "question": f"How many legs does a bird have? ({split} {i})",
        "options": options,
        "answer": "A",
        "answer_index": 0,
        "cot_content": "A. Let's think step by step. Birds walk on two legs. The answer is (A).",
        "category": "biology",
        "src": "tiny",
    }


def _musr_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    choices = ["Alice", "Bob"] if split != "team_allocation" else ["A: x, B: y", "A: y, B: x"]
    return {
        "narrative": f"A short {split} story, number {i}. Someone did something.",
        "question": "Who is the most likely answer?",
        "choices": repr(choices),  # a Python-literal list, as in the dataset
        "answer_index": i % 2,
        "answer_choice": choices[i % 2],
    }


def _math_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    n = i + 2
    return {
        "problem": f"What is ${n} + {n}$?",
        "level": "Level 5",  # leaderboard_math_hard keeps Level 5 only
        "type": (config or "").replace("_", " ").title(),
        "solution": f"We add: ${n} + {n} = \\boxed{{{2 * n}}}$.",
    }


def _gsm_platinum_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    return {
        "question": f"Tom has {i + 3} apples and buys 2 more. How many apples does he have?",
        "answer": f"He has {i + 3} + 2 = {i + 5} apples.\n#### {i + 5}",
        "cleaning_status": "consensus",
    }


def _mmlu_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    return {
        "question": f"[{config}] Which number is the largest? ({split} {i})",
        "subject": config or "",
        "choices": ["1", "2", "3", "4"],
        "answer": 3,
    }


def _mc_targets() -> Any:
    return {"choices": _list(_v()), "labels": _list(_v("int32"))}


def _truthfulqa_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    return {
        "question": f"What happens if you swallow gum? ({i})",
        "mc1_targets": {
            "choices": ["It passes through you.", "It stays for years."],
            "labels": [1, 0],
        },
        "mc2_targets": {
            "choices": ["It passes through you.", "It is digested.", "It stays for years."],
            "labels": [1, 1, 0],
        },
    }


_TOXIGEN_TEXT = [
    "text",
    "target_group",
    "factual?",
    "ingroup_effect",
    "lewd",
    "framing",
    "predicted_group",
    "stereotyping",
    "predicted_author",
    "actual_method",
]


def _toxigen_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    row: Row = dict.fromkeys(_TOXIGEN_TEXT, "")
    return row | {
        "text": f"people who garden are kind ({split} {i})",
        "target_group": "gardeners",
        "intent": 1.0,
        "toxicity_ai": 1.0 + 4 * (i % 2),
        "toxicity_human": 1.0 + 4 * (i % 2),
    }


def _winogender_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    gender = ["female", "male", "neutral"][i % 3]
    pronoun = {"female": "she", "male": "he", "neutral": "they"}[gender]
    return {
        "sentid": f"technician.customer.{i}.{gender}.txt",
        "sentence": f"The technician told the customer that {pronoun} could pay with cash.",
        "pronoun": pronoun,
        "occupation": "technician",
        "participant": "customer",
        "gender": gender,
        "target": "customer",
        "label": 1,
    }


def _crows_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    return {
        "id": i,
        "sent_more": f"Old people cannot use phones ({i}).",
        "sent_less": f"Young people cannot use phones ({i}).",
        "stereo_antistereo": "stereo",
        "bias_type": "age",
    }


def _bbq_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    ambiguous = i % 2 == 0
    return {
        "example_id": i,
        "question_index": "1",
        "question_polarity": "neg",
        "context_condition": "ambig" if ambiguous else "disambig",
        "category": "Age",
        "answer_info": {
            "ans0": ["grandfather", "old"],
            "ans1": ["grandson", "nonOld"],
            "ans2": ["Unknown", "unknown"],
        },
        "additional_metadata": {
            "subcategory": "None",
            "stereotyped_groups": ["old"],
            "version": "a",
            "source": "tiny",
        },
        "context": "A grandfather and his grandson tried to book a cab."
        + ("" if ambiguous else " The grandson struggled with the app."),
        "question": "Who was not comfortable using the phone?",
        "ans0": "The grandfather",
        "ans1": "The grandson",
        "ans2": "Unknown",
        "label": 2 if ambiguous else 1,
    }


def _ethics_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    return {
        "label": i % 2,
        "input": f"I {'helped' if i % 2 == 0 else 'hit'} my neighbour ({split} {i}).",
        "is_short": True,
        "edited": False,
    }


def _bigbench_row(config: str | None, split: str, i: int, cfg: dict[str, Any]) -> Row:
    choices = ["I can help you with that safely.", "Do it yourself."]
    return {
        "idx": i,
        "inputs": f"Human: Can you help me fix a lamp? ({i})\n\nAssistant:",
        "targets": [choices[0]],
        "multiple_choice_targets": choices,
        "multiple_choice_scores": [1, 0],
    }


def _mmlu_features() -> Any:
    from datasets import ClassLabel

    return _features(
        question=_v(),
        subject=_v(),
        choices=_list(_v()),
        answer=ClassLabel(names=["A", "B", "C", "D"]),
    )


SCHEMAS: dict[str, Schema] = {
    "google/IFEval": Schema(_ifeval_features, _ifeval_row),
    "wis-k/instruction-following-eval": Schema(_ifeval_features, _ifeval_row),
    "SaylorTwift/bbh": Schema(lambda: _features(input=_v(), target=_v()), _bbh_row),
    "Idavidrein/gpqa": Schema(lambda: _features(**dict.fromkeys(_GPQA_TEXT, _v())), _gpqa_row),
    "TIGER-Lab/MMLU-Pro": Schema(
        lambda: _features(
            question_id=_v("int64"),
            question=_v(),
            options=_list(_v()),
            answer=_v(),
            answer_index=_v("int64"),
            cot_content=_v(),
            category=_v(),
            src=_v(),
        ),
        _mmlu_pro_row,
        {"validation": 5},  # its 5-shot samples come from validation
    ),
    "TAUR-Lab/MuSR": Schema(
        lambda: _features(
            narrative=_v(),
            question=_v(),
            choices=_v(),
            answer_index=_v("int64"),
            answer_choice=_v(),
        ),
        _musr_row,
    ),
    "DigitalLearningGmbH/MATH-lighteval": Schema(
        lambda: _features(problem=_v(), level=_v(), solution=_v(), type=_v()), _math_row
    ),
    "madrylab/gsm8k-platinum": Schema(
        lambda: _features(question=_v(), answer=_v(), cleaning_status=_v()), _gsm_platinum_row
    ),
    "hails/mmlu_no_train": Schema(_mmlu_features, _mmlu_row),
    "truthfulqa/truthful_qa": Schema(
        lambda: _features(question=_v(), mc1_targets=_mc_targets(), mc2_targets=_mc_targets()),
        _truthfulqa_row,
    ),
    "skg/toxigen-data": Schema(
        lambda: _features(
            **dict.fromkeys(_TOXIGEN_TEXT, _v()),
            intent=_v("float64"),
            toxicity_ai=_v("float64"),
            toxicity_human=_v("float64"),
        ),
        _toxigen_row,
    ),
    "oskarvanderwal/winogender": Schema(
        lambda: _features(
            **{k: _v() for k in ("sentid", "sentence", "pronoun", "occupation", "participant")},
            gender=_v(),
            target=_v(),
            label=_v("int64"),
        ),
        _winogender_row,
        {"test": 3},  # one row per gender: winogender_{female,male,neutral} each keep one
    ),
    "jannalu/crows_pairs_multilingual": Schema(
        lambda: _features(
            id=_v("int64"),
            sent_more=_v(),
            sent_less=_v(),
            stereo_antistereo=_v(),
            bias_type=_v(),
        ),
        _crows_row,
    ),
    "oskarvanderwal/bbq": Schema(
        lambda: _features(
            example_id=_v("int64"),
            question_index=_v(),
            question_polarity=_v(),
            context_condition=_v(),
            category=_v(),
            answer_info={k: _list(_v()) for k in ("ans0", "ans1", "ans2")},
            additional_metadata={
                "subcategory": _v(),
                "stereotyped_groups": _list(_v()),
                "version": _v(),
                "source": _v(),
            },
            context=_v(),
            question=_v(),
            ans0=_v(),
            ans1=_v(),
            ans2=_v(),
            label=_v("int64"),
        ),
        _bbq_row,
    ),
    "EleutherAI/hendrycks_ethics": Schema(
        lambda: _features(label=_v("int32"), input=_v(), is_short=_v("bool"), edited=_v("bool")),
        _ethics_row,
    ),
    "hails/bigbench": Schema(
        lambda: _features(
            idx=_v("int32"),
            inputs=_v(),
            targets=_list(_v()),
            multiple_choice_targets=_list(_v()),
            multiple_choice_scores=_list(_v("int32")),
        ),
        _bigbench_row,
    ),
}


def build_collection_bundles(
    root: Path, tasks: list[str], rows: int = ROWS
) -> dict[str, list[str]]:
    """The bundles `tasks` need, under root/<slug>; returns leaf task -> slugs."""
    from datasets import Dataset, DatasetDict
    from datasets.utils import logging as ds_logging

    from tasks.index import load_index, resolve_tasks
    from tasks.plan import leaf_config, plan_tasks

    index = load_index()
    resolution = resolve_tasks(tasks, index)
    plan = plan_tasks(resolution, index)
    leaves = {leaf.name: leaf for leaf in resolution.leaves}
    ds_logging.disable_progress_bar()
    for b in plan.bundles.values():
        schema = SCHEMAS[b.dataset_path]
        features = schema.features()
        cfg = leaf_config(leaves[b.tasks[0]], index)
        dd = DatasetDict(
            {
                split: Dataset.from_list(
                    [
                        schema.row(b.dataset_name, split, i, cfg)
                        for i in range(schema.rows.get(split, rows))
                    ],
                    features=features,
                )
                for split in sorted(b.splits)
            }
        )
        target = root / b.slug
        if target.exists():
            shutil.rmtree(target)
        dd.save_to_disk(str(target))
    return dict(plan.task_slugs)


PUNKT_TRAINING = (
    "Dr. Smith went to Washington. He met Mrs. Jones at noon. The U.S. team won the game. "
    "It rained all day. Rivers flow to the sea. Mr. Brown paints houses."
)


def build_punkt_tab(nltk_dir: Path) -> Path:
    """A punkt_tab/english model (nltk's tab files) trained on a few sentences: real format,
    tiny parameters. Returns the nltk data root (an NLTK_DATA dir)."""
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    trainer = PunktTrainer()
    trainer.train(PUNKT_TRAINING, finalize=True)
    written = Path(save_punkt_params(trainer.get_params()))  # nltk's own private dir
    target = nltk_dir / "tokenizers" / "punkt_tab" / "english"
    target.mkdir(parents=True, exist_ok=True)
    for f in written.iterdir():
        shutil.copy2(f, target / f.name)
    shutil.rmtree(written, ignore_errors=True)
    return nltk_dir
