"""TyDiQA GoldP, 1-shot, token F1 / exact match — open-instruct's ``eval/tydiqa/run_eval.py`` protocol.

Protocol: the GoldP dev set (SQuAD layout; the language is the id's prefix) is subsampled to ``limit``
examples per language (seeded); each passage (and the one-shot passage) is cut to ``max_context_length``
tokens of the evaluated model's tokenizer; the prompt is open-instruct's per-language template
("Answer the following question based on the information in the given passage." / "Passage:" /
"Question:" / "Answer:" and their translations) with ``n_shot`` demonstrations from the one-shot file;
greedy decoding, at most 50 new tokens, stop at the first newline, strip. Scores: SQuAD v1.1 EM and F1
(max over gold answers) per language, then the unweighted mean over languages (``value`` = mean F1).

Differences from open-instruct, all small: the demonstrations come from ``tydiqa-one-shot.json`` (the
LESS layout, one list per language) instead of sampling the GoldP train file; the passage is cut with
``add_special_tokens=False`` (open-instruct's ``encode`` counts a BOS and decodes it into the passage).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from selectit.engines.generation import truncate_at_stops
from selectit.errors import InputError
from selectit.evaluation import textgen as tg
from selectit.evaluation.metrics import exact_match, max_over_golds, squad_scores, token_f1

BENCHMARK = "tydiqa"
DEV_FILES = ("tydiqa/tydiqa-goldp-v1.1-dev.json", "tydiqa/tydiqa-goldp-v1.1-dev_ini.json")
SHOT_FILES = ("tydiqa/tydiqa-one-shot.json",)

# (instruction, passage tag, question tag, answer tag) — open-instruct's templates, verbatim.
TEMPLATES: dict[str, tuple[str, str, str, str]] = {
    "english": ("Answer the following question based on the information in the given passage.",
                "Passage:", "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:", "প্রশ্ন:", "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.",
                "Kappale:", "Kysymys:", "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.",
                   "Bagian:", "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.",
                "Отрывок:", "Вопрос:", "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.",
                "Kifungu:", "Swali:", "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}

DEFAULTS: dict[str, Any] = {
    "limit": 100,               # examples per language (open-instruct: max_num_examples_per_lang)
    "languages": None,          # None: every language in the dev file
    "n_shot": 1,
    "max_context_length": 512,  # tokens
    "max_new_tokens": 50,
    "batch_size": 8,
    "seed": 42,
    "device": None,
    "dtype": "auto",
    "chat_format": None,        # None | "tulu" | "tokenizer"
}


def check_data(data_dir: str | Path, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks the GoldP dev file or (with shots) the one-shot file."""
    tg.find_data_file(data_dir, DEV_FILES, "TyDiQA GoldP dev")
    if (settings or {}).get("n_shot", DEFAULTS["n_shot"]) > 0:
        tg.find_data_file(data_dir, SHOT_FILES, "TyDiQA one-shot")


def load_dev(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    examples = []
    for article in data.get("data", []):
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                examples.append({"id": qa["id"], "lang": qa["id"].split("-")[0], "context": paragraph["context"],
                                 "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    if not examples:
        raise InputError(f"{path} holds no questions (expected SQuAD layout: data/paragraphs/qas)")
    return examples


def load_shots(path: Path) -> dict[str, list[dict[str, Any]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping language -> list of examples")
    return {lang: [{"id": e["id"], "context": e["context"], "question": e["question"],
                    "answers": [a["text"] for a in e["answers"]]} for e in items]
            for lang, items in data.items()}


def select_examples(examples: list[dict], languages: list[str] | None, limit: int | None,
                    seed: int) -> list[dict]:
    present = sorted({e["lang"] for e in examples})
    langs = sorted(languages) if languages else present
    missing = [lang for lang in langs if lang not in present]
    if missing:
        raise InputError(f"languages {missing} are not in the dev file (it has {present})")
    unknown = [lang for lang in langs if lang not in TEMPLATES]
    if unknown:
        raise InputError(f"no prompt template for languages {unknown}")
    rng = random.Random(seed)
    chosen = []
    for lang in langs:
        pool = [e for e in examples if e["lang"] == lang]
        if limit is not None and len(pool) > limit:
            pool = rng.sample(pool, limit)
        chosen.extend(pool)
    return chosen


def truncate_context(tokenizer, text: str, max_tokens: int | None) -> str:
    if not max_tokens:
        return text
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def build_prompt(example: dict, shots: list[dict], tokenizer, chat_format: str | None) -> str:
    instruction, p_tag, q_tag, a_tag = TEMPLATES[example["lang"]]
    prompt = instruction + "\n\n"
    if shots:
        demos = [f"{p_tag} {s['context']}\n{q_tag} {s['question']}\n{a_tag} {s['answers'][0]}" for s in shots]
        prompt += "\n\n".join(demos) + "\n\n"
    prompt += f"{p_tag} {example['context']}\n{q_tag} {example['question']}\n"
    if chat_format in (None, "none"):
        return prompt + a_tag
    return tg.append_after_chat(tg.chat_prompt(tokenizer, prompt.strip(), chat_format), a_tag)


def postprocess(generation: str) -> str:
    """open-instruct stops at the first newline and strips the answer."""
    return truncate_at_stops(generation, ["\n"]).strip()


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    t0 = time.monotonic()
    cfg = tg.merge_settings(DEFAULTS, settings)
    dev_path = tg.find_data_file(data_dir, DEV_FILES, "TyDiQA GoldP dev")
    examples = select_examples(load_dev(dev_path), cfg["languages"], cfg["limit"], int(cfg["seed"]))
    shot_path = None
    shots_by_lang: dict[str, list[dict]] = {}
    if cfg["n_shot"] > 0:
        shot_path = tg.find_data_file(data_dir, SHOT_FILES, "TyDiQA one-shot")
        all_shots = load_shots(shot_path)
        for lang in sorted({e["lang"] for e in examples}):
            have = all_shots.get(lang, [])
            if len(have) < cfg["n_shot"]:
                raise InputError(f"{shot_path} has {len(have)} demonstrations for {lang}, need {cfg['n_shot']}")
            shots_by_lang[lang] = [dict(s) for s in have[: cfg["n_shot"]]]

    model, tokenizer = tg.load_model(model_dir, cfg)
    for shots in shots_by_lang.values():
        for s in shots:
            s["context"] = truncate_context(tokenizer, s["context"], cfg["max_context_length"])
    prompts = []
    for e in examples:
        e = dict(e, context=truncate_context(tokenizer, e["context"], cfg["max_context_length"]))
        prompts.append(build_prompt(e, shots_by_lang.get(e["lang"], []), tokenizer, cfg["chat_format"]))
    generations = tg.generate(model, tokenizer, prompts, max_new_tokens=int(cfg["max_new_tokens"]),
                              batch_size=int(cfg["batch_size"]), do_sample=False, stop=["\n"],
                              seed=int(cfg["seed"]))

    predictions = []
    for e, gen, prompt in zip(examples, generations, prompts):
        pred = postprocess(gen[0])
        predictions.append({"id": e["id"], "lang": e["lang"], "question": e["question"], "answers": e["answers"],
                            "generation": gen[0], "prediction": pred,
                            "f1": 100.0 * max_over_golds(token_f1, pred, e["answers"]),
                            "exact_match": 100.0 * max_over_golds(exact_match, pred, e["answers"]),
                            "prompt_chars": len(prompt)})
    per_lang = {}
    for lang in sorted({p["lang"] for p in predictions}):
        rows = [p for p in predictions if p["lang"] == lang]
        per_lang[lang] = squad_scores([p["prediction"] for p in rows], [p["answers"] for p in rows])
    f1 = sum(s["f1"] for s in per_lang.values()) / len(per_lang)
    em = sum(s["exact_match"] for s in per_lang.values()) / len(per_lang)
    shot_ids = {s["id"] for shots in shots_by_lang.values() for s in shots}
    return tg.finish(
        out_path, benchmark=BENCHMARK, metric="f1", value=f1, predictions=predictions, settings=cfg,
        started=t0, model_dir=model_dir, data_dir=data_dir,
        protocol=(f"open-instruct TyDiQA GoldP {cfg['n_shot']}-shot, passages cut to {cfg['max_context_length']} "
                  "tokens, greedy, stop at newline; SQuAD F1/EM per language, mean over languages"),
        metrics={"f1": f1, "exact_match": em, "per_language": per_lang,
                 "averaging": "unweighted mean over languages of per-language SQuAD scores"},
        data={"dev_file": str(dev_path), "dev_sha256": tg.sha256_file(dev_path),
              "shot_file": str(shot_path) if shot_path else None, "shot_ids": sorted(shot_ids),
              "shots_also_in_test": sorted(shot_ids & {p["id"] for p in predictions})},
        example_prompt=prompts[0] if prompts else None,
    )
