"""Role attribution: which RoleBench role does an answer sound like?

    from tunesmith.eval.attribution import train_classifier
    clf = train_classifier("datasets/rolebench-zh")        # ~10 s on 2 CPU cores; memoized per process
    clf.predict(["哈哈，举杯邀明月，对影成三人！"])           # ["李白"]
    clf.heldout["accuracy"]                                # accuracy on the test answers it never saw

A small text classifier, character n-grams (1 to 3, TF-IDF with sublinear tf) and a linear SVM (scikit-learn),
trained on every answer of the RoleBench-zh *train* files of all its roles (general + role_specific).  Its
accuracy is measured on the answers of the *test* files (general + role_specific), which share no
(role, question) pair with train: these are the CUS / SPE reference answers, so the classifier never saw the
answers an evaluation compares against.  An evaluation reports, per model and set, the share of answers it
attributes to the role the test asks for.  It sees wording, not meaning: a character's pet words (吾, 朕, 俺老孙,
本宫), but also topics (poems and wine for 李白), so an answer that repeats a role-specific question's words can
be attributed to the role without any voice (docs/evaluation.md, "In character").

Training is deterministic (the same files give the same model); nothing is downloaded.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, DataError

REPO_DATA = Path(__file__).resolve().parents[3] / "datasets" / "rolebench-zh"
TRAIN_FILES = ("general/train.jsonl", "role_specific/train.jsonl")
HELDOUT_FILES = ("general/test.jsonl", "role_specific/test.jsonl")
NGRAMS = (1, 3)
UNATTRIBUTED = "(none)"  # an empty answer, or one with no character n-gram the classifier knows
CLASSIFIER_DESCRIPTION = (
    "role attribution = the share of answers a character n-gram classifier (TF-IDF of 1-3 character n-grams, "
    "linear SVM, scikit-learn) trained on the RoleBench-zh train answers of all roles attributes to the test's "
    "role; empty answers and answers with no known n-gram count as attributed to none"
)
_MEMO: dict[tuple, RoleClassifier] = {}


@dataclass
class RoleClassifier:
    pipeline: Any  # sklearn Pipeline(TfidfVectorizer, LinearSVC)
    roles: list[str]
    data: str
    train_answers: dict[str, int]  # answers per role it was trained on
    heldout: dict[str, Any] = field(default_factory=dict)  # accuracy on the test answers (see heldout_report)
    seconds: float = 0.0

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The role each text sounds like; UNATTRIBUTED for an empty text or one with no known n-gram."""
        if not texts:
            return []
        clean = [_clean(t) for t in texts]
        features = self.pipeline[0].transform(clean)
        guesses = self.pipeline[1].predict(features)
        known = features.getnnz(axis=1)
        return [str(g) if c and k else UNATTRIBUTED for g, c, k in zip(guesses, clean, known)]

    def probabilities(self, texts: Sequence[str], role: str) -> list[float | None]:
        """How much each text sounds like `role`: a softmax of the SVM's decision values over the roles (LinearSVC
        gives no probabilities); None for every text when `role` is not one of the classifier's, 0.0 for a text
        with no known character n-gram."""
        import math

        if role not in self.roles or not texts:
            return [None] * len(texts)
        features = self.pipeline[0].transform([_clean(t) for t in texts])
        at = list(self.pipeline[1].classes_).index(role)
        out: list[float | None] = []
        for row, known in zip(self.pipeline[1].decision_function(features), features.getnnz(axis=1)):
            if not known:
                out.append(0.0)
                continue
            exp = [math.exp(float(v) - max(row)) for v in row]
            out.append(exp[at] / sum(exp))
        return out

    def summary(self) -> dict[str, Any]:
        """What metrics.json records about the classifier."""
        return {"data": self.data, "roles": self.roles, "train_answers": self.train_answers,
                "train_files": list(TRAIN_FILES), "heldout_files": list(HELDOUT_FILES), "ngrams": list(NGRAMS),
                "heldout": self.heldout, "seconds": round(self.seconds, 2)}


def _clean(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").strip()


def default_data_dir() -> Path | None:
    """The repository's datasets/rolebench-zh (beside src/), or ./datasets/rolebench-zh; None when neither."""
    for cand in (REPO_DATA, Path.cwd() / "datasets" / "rolebench-zh"):
        if all((cand / f).is_file() for f in TRAIN_FILES):
            return cand
    return None



def _read_files(folder: Path, files, max_per_role) -> tuple[list[str], list[str]]:
    """The answers and their roles of several RoleBench-zh files, in order."""
    texts: list[str] = []
    roles: list[str] = []
    for f in files:
        t, r = read_answers(folder / f, max_per_role)
        texts += t
        roles += r
    return texts, roles

def read_answers(path: Path, max_per_role: int | None = None) -> tuple[list[str], list[str]]:
    """(answers, roles) of a RoleBench file {role, question, generated: [...]}: every answer, in file order."""
    texts: list[str] = []
    roles: list[str] = []
    seen: Counter = Counter()
    if not path.is_file():
        raise DataError("RoleBench file not found (the classifier needs general/ and role_specific/ train and "
                        "test files)", str(path))
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            role, answers = rec["role"], rec["generated"]
        except (ValueError, KeyError, TypeError):
            raise DataError('expected a RoleBench record {"role", "question", "generated": [...]}',
                            f"{path}:{n}") from None
        for a in answers if isinstance(answers, list) else [answers]:
            if isinstance(a, str) and a.strip() and (max_per_role is None or seen[role] < max_per_role):
                texts.append(_clean(a))
                roles.append(str(role))
                seen[role] += 1
    return texts, roles


def heldout_report(clf: RoleClassifier, texts: Sequence[str], roles: Sequence[str]) -> dict[str, Any]:
    """{"n", "accuracy", "per_role": {role: {"n", "recall", "precision"}}, "confusion": {true: {predicted: n}}}."""
    predicted = clf.predict(texts)
    pairs = Counter(zip(roles, predicted))
    per_role = {}
    for r in clf.roles:
        n = sum(v for (t, _), v in pairs.items() if t == r)
        said = sum(v for (_, p), v in pairs.items() if p == r)
        per_role[r] = {"n": n, "recall": pairs[(r, r)] / n if n else 0.0,
                       "precision": pairs[(r, r)] / said if said else 0.0}
    confusion = {t: {p: pairs[(t, p)] for p in [*clf.roles, UNATTRIBUTED] if pairs[(t, p)]} for t in clf.roles}
    right = sum(pairs[(r, r)] for r in clf.roles)
    return {"n": len(texts), "accuracy": right / len(texts) if texts else 0.0, "per_role": per_role,
            "confusion": confusion}


def _fingerprint(folder: Path) -> tuple:
    return tuple((f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns)
                 for f in TRAIN_FILES + HELDOUT_FILES if (folder / f).is_file())


def train_classifier(data_dir: str | Path, max_per_role: int | None = None) -> RoleClassifier:
    """Train on the train answers of `data_dir` (a rolebench-zh folder) and measure on its test answers.

    `max_per_role` keeps the first N answers of each role per file (tests).  Memoized per process by the folder,
    its files' sizes and times, and max_per_role."""
    folder = Path(data_dir).resolve()
    key = (str(folder), _fingerprint(folder), max_per_role)
    if key in _MEMO:
        return _MEMO[key]
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline
        from sklearn.svm import LinearSVC
    except ImportError:
        raise ConfigError("role attribution needs scikit-learn (pip install scikit-learn), or --no-attribution") \
            from None
    t0 = time.perf_counter()
    texts, roles = _read_files(folder, TRAIN_FILES, max_per_role)
    if len(set(roles)) < 2:
        raise DataError("the classifier needs train answers of at least two roles", str(folder))
    pipeline = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=NGRAMS, sublinear_tf=True, min_df=2),
                             LinearSVC(C=0.5, random_state=0))
    pipeline.fit(texts, roles)
    clf = RoleClassifier(pipeline, sorted(set(roles)), str(data_dir), dict(sorted(Counter(roles).items())))
    held_texts, held_roles = _read_files(folder, HELDOUT_FILES, max_per_role)
    clf.heldout = heldout_report(clf, held_texts, held_roles)
    clf.seconds = time.perf_counter() - t0
    _MEMO[key] = clf
    return clf


def attribute_sets(clf: RoleClassifier, items: Sequence[Any], preds: dict[str, str],
                   skip_sets: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """{set: {"role_share", "attributed", "attributed_n"}} for one model's answers: the items (EvalItem) it answered
    whose role the classifier knows, per set (sets in `skip_sets` left out)."""
    by_set: dict[str, list[Any]] = {}
    for i in items:
        if i.set not in skip_sets and i.id in preds and i.role in clf.roles:
            by_set.setdefault(i.set, []).append(i)
    out = {}
    for name, group in by_set.items():
        predicted = clf.predict([preds[i.id] for i in group])
        hits = sum(p == i.role for p, i in zip(predicted, group))
        out[name] = {"role_share": hits / len(group), "attributed": dict(Counter(predicted).most_common()),
                     "attributed_n": len(group)}
    return out


__all__ = ["RoleClassifier", "UNATTRIBUTED", "CLASSIFIER_DESCRIPTION", "default_data_dir", "train_classifier",
           "heldout_report", "attribute_sets", "read_answers"]
