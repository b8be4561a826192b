"""How `data make-pairs --strategy rank` scores an answer: one number, and the terms it is made of.

    from tunesmith.data.pair_scores import AnswerScorer
    scorer = AnswerScorer(classifier)        # a tunesmith.eval.attribution RoleClassifier, or None
    scorer.score("吾乃李白，举杯邀明月。", ["吾乃李白。"], role="李白")
    # {"task": "role", "rouge_l": 0.6, "loops": False, "loop_penalty": 0.0, "verdict": "names_role",
    #  "ooc_penalty": 0.0, "role_p": 0.71, "total": 0.778}

The terms reuse the evaluation's own measures, so a pair's chosen answer is better by what eval reports:

role-play answers (anything that is not IE or classification)
    total = ROUGE_WEIGHT * rouge_l - LOOP_PENALTY * loops - OOC_PENALTY * out_of_character + ROLE_WEIGHT * role_p
    rouge_l  ROUGE-L F on characters (tunesmith.eval.rouge.rouge_l_zh), best of the references
    loops    tunesmith.eval.repetition.loops: some 4-unit n-gram occurs 3 times or more
    out_of_character  tunesmith.eval.in_character.verdict is empty, claims_ai, breaks_role or repeats_prompt
    role_p   the role classifier's (tunesmith.eval.attribution) probability that the answer is the role's: a
             softmax over its roles of the linear SVM's decision values (SVMs give margins, not probabilities;
             the softmax makes them comparable across answers); 0 and `role_known: false` when the classifier
             does not know the role (or there is no classifier)
IE and classification records (meta.task, else the reference's shape, as eval tells them: ie.task_of_target)
    total = match + PARSE_WEIGHT * parses
    match    ie: triple F1 against the reference (ie.triple_match); cls: 1 when the label equals the reference's
    parses   the answer parses as JSON by eval's rule (ie.parse_json_answer)

The weights put ROUGE first (one point of it is the whole range), a loop or a broken role at half of that (such
an answer is worse than any in-character answer that shares no character with the reference), and the role's
voice as a tie-breaker between answers of the same content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROUGE_WEIGHT = 1.0
LOOP_PENALTY = 0.5
OOC_PENALTY = 0.5
ROLE_WEIGHT = 0.25
PARSE_WEIGHT = 0.2
WEIGHTS = {"rouge_l": ROUGE_WEIGHT, "loop_penalty": LOOP_PENALTY, "ooc_penalty": OOC_PENALTY,
           "role_p": ROLE_WEIGHT, "parse": PARSE_WEIGHT}
ROLE, IE, CLS = "role", "ie", "cls"
SCORER_DESCRIPTION = (
    f"role-play: {ROUGE_WEIGHT} x ROUGE-L (chars, best reference) - {LOOP_PENALTY} x loops (eval.repetition) - "
    f"{OOC_PENALTY} x out of character (eval.in_character verdict) + {ROLE_WEIGHT} x the role classifier's "
    f"probability for the role (0 when it does not know the role); IE/CLS: triple F1 or exact label + "
    f"{PARSE_WEIGHT} x the answer parses as JSON"
)


def task_of(reference: str, meta: dict[str, Any]) -> str:
    """IE, CLS or ROLE: meta.task when it says ie or cls, else the reference's shape (as eval tells them)."""
    from tunesmith.eval.ie import task_of_target

    task = meta.get("task")
    if task in (IE, CLS):
        return task
    shape = task_of_target(reference)
    return shape if shape in (IE, CLS) else ROLE


class AnswerScorer:
    """Scores answers by the rules above; `classifier` (RoleClassifier or None) gives the role term."""

    def __init__(self, classifier: Any = None):
        self.classifier = classifier

    def score_many(self, answers: Sequence[str], references: Sequence[str], task: str = ROLE, role: str = "",
                   question: str = "", persona: str | None = None) -> list[dict[str, Any]]:
        """One score dict per answer (see `score`); the classifier sees all answers at once."""
        if task in (IE, CLS):
            return [_structured(a, references[0], task) for a in answers]
        probs = self.classifier.probabilities(answers, role) if self.classifier else [None] * len(answers)
        return [_role_play(a, references, role, question, persona, p) for a, p in zip(answers, probs)]

    def score(self, answer: str, references: Sequence[str], task: str = ROLE, role: str = "", question: str = "",
              persona: str | None = None) -> dict[str, Any]:
        """The terms and the total of one answer against its references."""
        return self.score_many([answer], references, task, role, question, persona)[0]


def _role_play(answer: str, references: Sequence[str], role: str, question: str, persona: str | None,
               role_p: float | None) -> dict[str, Any]:
    from tunesmith.eval.in_character import IN_CHARACTER, verdict
    from tunesmith.eval.repetition import loops
    from tunesmith.eval.rouge import rouge_l_zh

    rouge = rouge_l_zh(answer, list(references))
    looping = loops(answer)
    category, _ = verdict(answer, role, question=question, persona=persona)
    loop_penalty = LOOP_PENALTY if looping else 0.0
    ooc_penalty = 0.0 if category in IN_CHARACTER else OOC_PENALTY
    total = ROUGE_WEIGHT * rouge - loop_penalty - ooc_penalty + ROLE_WEIGHT * (role_p or 0.0)
    return {"task": ROLE, "rouge_l": round(rouge, 4), "loops": looping, "loop_penalty": loop_penalty,
            "verdict": category, "ooc_penalty": ooc_penalty,
            "role_p": None if role_p is None else round(role_p, 4), "role_known": role_p is not None,
            "total": round(total, 4)}


def _structured(answer: str, reference: str, task: str) -> dict[str, Any]:
    from tunesmith.eval.ie import _prf, label_of, parse_json_answer, triple_match

    parses = parse_json_answer(answer)[0]
    if task == IE:
        m = triple_match(answer, reference)  # eval's per-answer counts, F1 by eval's own rule
        match = _prf(m["tp"], m["n_pred"], m["n_gold"])[2] if parses else 0.0
        name = "f1"
    else:
        want = label_of(reference)
        match = float(want is not None and label_of(answer) == want)
        name = "exact"
    total = match + PARSE_WEIGHT * parses
    return {"task": task, name: round(match, 4), "parses": parses, "total": round(total, 4)}


__all__ = ["ROUGE_WEIGHT", "LOOP_PENALTY", "OOC_PENALTY", "ROLE_WEIGHT", "PARSE_WEIGHT", "WEIGHTS",
           "SCORER_DESCRIPTION", "AnswerScorer", "task_of"]
