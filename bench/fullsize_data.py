"""Full-size, real-format data for the full-size bench: the `mmlu` group (cais/mmlu's schema,
57 subjects, the real per-subject row counts: 14,042 test questions) and leaderboard_mmlu_pro
(TIGER-Lab/MMLU-Pro's schema: 12,032 test questions over 14 categories, 70 validation rows with
chain-of-thought), as `save_to_disk` bundles under their slugs. The text is synthetic (seeded
random words) at realistic lengths: what a run's memory and CPU depend on is the number of
questions and the prompt lengths, not the words.

    python bench/fullsize_data.py --out DIR [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path
from typing import Any

# cais/mmlu test rows per subject (their sum is 14,042); dev has 5 per subject, validation ~10%
MMLU_TEST = {
    "abstract_algebra": 100, "anatomy": 135, "astronomy": 152, "business_ethics": 100,
    "clinical_knowledge": 265, "college_biology": 144, "college_chemistry": 100,
    "college_computer_science": 100, "college_mathematics": 100, "college_medicine": 173,
    "college_physics": 102, "computer_security": 100, "conceptual_physics": 235,
    "econometrics": 114, "electrical_engineering": 145, "elementary_mathematics": 378,
    "formal_logic": 126, "global_facts": 100, "high_school_biology": 310,
    "high_school_chemistry": 203, "high_school_computer_science": 100,
    "high_school_european_history": 165, "high_school_geography": 198,
    "high_school_government_and_politics": 193, "high_school_macroeconomics": 390,
    "high_school_mathematics": 270, "high_school_microeconomics": 238, "high_school_physics": 151,
    "high_school_psychology": 545, "high_school_statistics": 216, "high_school_us_history": 204,
    "high_school_world_history": 237, "human_aging": 223, "human_sexuality": 131,
    "international_law": 121, "jurisprudence": 108, "logical_fallacies": 163,
    "machine_learning": 112, "management": 103, "marketing": 234, "medical_genetics": 100,
    "miscellaneous": 783, "moral_disputes": 346, "moral_scenarios": 895, "nutrition": 306,
    "philosophy": 311, "prehistory": 324, "professional_accounting": 282,
    "professional_law": 1534, "professional_medicine": 272, "professional_psychology": 612,
    "public_relations": 110, "security_studies": 245, "sociology": 201, "us_foreign_policy": 100,
    "virology": 166, "world_religions": 171,
}  # fmt: skip
# subjects whose questions are passages (mean words per question); the rest average ~40
LONG = {"professional_law": 240, "high_school_european_history": 300,
        "high_school_us_history": 280, "high_school_world_history": 260,
        "professional_medicine": 130, "professional_accounting": 80, "moral_scenarios": 45}  # fmt: skip
PRO_CATEGORIES = [
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
]
PRO_TEST, PRO_VALIDATION = 12_032, 70

_WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "on",
    "are",
    "with",
    "as",
    "by",
    "be",
    "at",
    "this",
    "from",
    "or",
    "an",
    "which",
    "not",
    "have",
    "it",
    "one",
    "all",
    "were",
    "their",
    "has",
    "more",
    "also",
    "its",
    "been",
    "two",
    "can",
    "other",
    "after",
    "first",
    "energy",
    "market",
    "court",
    "theory",
    "cell",
    "patient",
    "value",
    "function",
    "system",
    "acid",
    "law",
    "state",
    "force",
    "growth",
    "protein",
    "rate",
    "price",
    "number",
    "model",
    "data",
    "equation",
    "reaction",
    "species",
    "contract",
    "tissue",
    "voltage",
    "policy",
    "culture",
    "memory",
    "signal",
]


def _text(rng: random.Random, mean: int) -> str:
    n = max(3, int(rng.gauss(mean, mean / 3)))
    return " ".join(rng.choices(_WORDS, k=n)).capitalize() + "?"


def _mmlu_rows(rng: random.Random, subject: str, n: int) -> dict[str, list[Any]]:
    mean = LONG.get(subject, 40)
    return {
        "question": [_text(rng, mean) for _ in range(n)],
        "subject": [subject] * n,
        "choices": [[_text(rng, 6)[:-1] for _ in range(4)] for _ in range(n)],
        "answer": [rng.randrange(4) for _ in range(n)],
    }


def build_mmlu(out: Path, seed: int = 0) -> int:
    import datasets

    features = datasets.Features({
        "question": datasets.Value("string"), "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=["A", "B", "C", "D"]),
    })  # fmt: skip
    rng = random.Random(seed)
    total = 0
    for subject, n in MMLU_TEST.items():
        splits = {"test": n, "validation": max(5, n // 9), "dev": 5}
        dd = datasets.DatasetDict({
            s: datasets.Dataset.from_dict(_mmlu_rows(rng, subject, k), features=features)
            for s, k in splits.items()
        })  # fmt: skip
        dd.save_to_disk(str(out / f"cais--mmlu--{subject}"), num_shards={s: 1 for s in dd})
        total += n
    return total


def _pro_rows(rng: random.Random, n: int, start: int, cot: bool) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {k: [] for k in ("question_id", "question", "options", "answer",
                                                  "answer_index", "cot_content", "category", "src")}  # fmt: skip
    for i in range(n):
        k = rng.choice([10] * 8 + [9, 8, 4])  # most MMLU-Pro questions have 10 options
        idx = rng.randrange(k)
        category = rng.choice(PRO_CATEGORIES)
        rows["question_id"].append(start + i)
        rows["question"].append(_text(rng, 120 if category == "law" else 50))
        rows["options"].append([_text(rng, 8)[:-1] for _ in range(k)])
        rows["answer"].append("ABCDEFGHIJ"[idx])
        rows["answer_index"].append(idx)
        rows["cot_content"].append(_text(rng, 120) if cot else "")
        rows["category"].append(category)
        rows["src"].append(f"ori_mmlu-{category.replace(' ', '_')}")
    return rows


def build_mmlu_pro(out: Path, seed: int = 0) -> int:
    import datasets

    features = datasets.Features({
        "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
        "options": datasets.Sequence(datasets.Value("string")), "answer": datasets.Value("string"),
        "answer_index": datasets.Value("int64"), "cot_content": datasets.Value("string"),
        "category": datasets.Value("string"), "src": datasets.Value("string"),
    })  # fmt: skip
    rng = random.Random(seed + 1)
    dd = datasets.DatasetDict({
        "test": datasets.Dataset.from_dict(_pro_rows(rng, PRO_TEST, 70, False), features=features),
        "validation": datasets.Dataset.from_dict(_pro_rows(rng, PRO_VALIDATION, 0, True),
                                                 features=features),
    })  # fmt: skip
    dd.save_to_disk(str(out / "TIGER-Lab--MMLU-Pro"), num_shards={s: 1 for s in dd})
    return PRO_TEST


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer dir to copy to OUT/tokenizer")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"mmlu: {build_mmlu(args.out)} test questions; mmlu_pro: {build_mmlu_pro(args.out)}")
    if args.tokenizer:
        shutil.copytree(args.tokenizer, args.out / "tokenizer", dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
