"""The data phase of a run: dataset specs -> shuffled, cut conversations -> token ids with answer-only labels.

    from tunesmith.train.training_data import load_conversations, load_training_data, run_character
    train, dev = load_conversations(cfg)                       # Conversations (dev: given, or carved from train)
    data = load_training_data(cfg, tokenizer, template)        # + encoded samples and their statistics
    char = run_character(cfg, data.train_convs)                # saved as character.json next to the adapter

The order is seeded (`seed`), the dev subset fixed (`data.max_dev_samples`, the same at every eval and across
resumes). When every training conversation has the same system prompt, it becomes the template's default,
so chat/serve without --system prompt the model exactly as it was trained.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data import resolve_dataset, split_conversations
from tunesmith.errors import ConfigError, DataError
from tunesmith.train.dataset import EncodeStats, encode_all
from tunesmith.train.runtime import log


@dataclass
class TrainingData:
    train_convs: list
    dev_convs: list
    train_samples: list[dict[str, Any]]
    dev_samples: list[dict[str, Any]]
    train_stats: EncodeStats
    dev_stats: EncodeStats | None

    @property
    def sample_prompt(self):
        """(system, messages) of the first dev conversation when it ends in a question, else None: what the
        progress display answers at every eval."""
        if not self.dev_convs:
            return None
        first = self.dev_convs[0]
        ok = first.prompt_messages and first.prompt_messages[-1].role == "user"
        return (first.system, first.prompt_messages) if ok else None


def explicit_character(cfg):
    """The Character the recipe's `character:` names (a card file, JSON or PNG; a character.json; a folder holding
    one, such as a trained adapter), or None without the key. Read before the model loads: a bad card fails fast."""
    if not cfg.character:
        return None
    from tunesmith.character import CHARACTER_FILE, load_character
    from tunesmith.data.card import read_character

    path = Path(cfg.character).expanduser()
    if path.is_dir() or path.name == CHARACTER_FILE:
        folder = path if path.is_dir() else path.parent
        char = load_character(folder)
        if char is None:
            raise ConfigError(f"character: {folder} holds no {CHARACTER_FILE} (expected a character card, JSON or "
                              f"PNG, a {CHARACTER_FILE} or a folder with one)")
        return char
    return read_character(path)


def run_character(cfg, train_convs, explicit=None, stream=None):
    """The character saved next to the adapter: the one `character:` names, else the card every card conversation
    of the training data came from (meta.card: a card's conversations, chats read with its card), else
    init_adapter's character.json, else None."""
    from tunesmith.character import Character, load_character

    if explicit is not None:
        return explicit
    cards: dict[str, dict] = {}
    for c in train_convs:
        if isinstance(c.meta.get("card"), dict):  # a card's conversations; SillyTavern chats read with -O card=
            cards.setdefault(json.dumps(c.meta["card"], sort_keys=True, ensure_ascii=False), c.meta["card"])
    if len(cards) == 1:
        return Character.from_dict(next(iter(cards.values())), "the training data's meta.card")
    if len(cards) > 1:
        names = sorted({str(card.get("name")) for card in cards.values()})
        log(f"note: the training data comes from {len(cards)} character cards ({', '.join(names)}): no "
            "character.json is saved with the adapter (name one with character: PATH)", stream)
    return load_character(cfg.init_adapter) if cfg.init_adapter else None


def load_conversations(cfg):
    """(train, dev) Conversations for `cfg` (a TrainConfig): train shuffled with `seed` (unless data.shuffle is
    false) and cut to
    data.max_samples; dev from data.dev, else data.dev_ratio of the training questions."""
    train = resolve_dataset(cfg.data.train, purpose="train")
    if not train:
        raise DataError("no training conversations (the dataset is empty)", str(cfg.data.train))
    dev = resolve_dataset(cfg.data.dev) if cfg.data.dev is not None else []
    if not dev and cfg.data.dev_ratio > 0:
        train, dev = split_conversations(train, cfg.data.dev_ratio, seed=cfg.seed)
    train = list(train)
    if cfg.data.shuffle:
        random.Random(cfg.seed).shuffle(train)
    if cfg.data.max_samples is not None:
        train = train[: cfg.data.max_samples]
    if dev and cfg.data.max_dev_samples and len(dev) > cfg.data.max_dev_samples:
        # a fixed, spread-out subset: the same dev set at every eval and across resumes
        pick = sorted(random.Random(0).sample(range(len(dev)), cfg.data.max_dev_samples))
        dev = [dev[i] for i in pick]
    return train, dev


def encoder_for(cfg, train_convs, dev_convs):
    """The function that encodes this method's data (SFT rows, pairs or judged answers); a DataError when the
    data is not what `cfg.method` trains on (a pair's chosen answer is also an SFT row)."""
    from tunesmith.preference import check_method_data, kind_of_dataset
    from tunesmith.train.preference_data import encode_judged, encode_pairs

    for convs, spec in ((train_convs, cfg.data.train), (dev_convs, cfg.data.dev or cfg.data.train)):
        if convs:
            check_method_data(cfg.method, kind_of_dataset(convs, str(spec)), str(spec))
    if cfg.method in ("dpo", "orpo"):
        return lambda convs, tok, tpl, **enc: encode_pairs(convs, tok, tpl, max_source_len=enc["max_source_len"],
                                                           max_target_len=enc["max_target_len"])
    if cfg.method == "kto":
        return lambda convs, tok, tpl, **enc: encode_judged(convs, tok, tpl, max_source_len=enc["max_source_len"],
                                                            max_target_len=enc["max_target_len"])
    return encode_all


def load_training_data(cfg, tokenizer, template, stream=None) -> TrainingData:
    """Load and encode train and dev data with `template` (whose default system prompt it may set); prints
    the data line. DataError when no training conversation has an answer token left to learn."""
    train_convs, dev_convs = load_conversations(cfg)
    enc = dict(max_source_len=cfg.data.max_source_len, max_target_len=cfg.data.max_target_len,
               train_on_prompt=cfg.data.train_on_prompt, last_turn_only=cfg.data.last_turn_only)
    systems = {c.system for c in train_convs}
    if cfg.system is None and len(systems) == 1 and None not in systems:
        # A persona shared by every conversation: saved as the template's default (see the module docstring).
        template.default_system = systems.pop()
    encode = encoder_for(cfg, train_convs, dev_convs)
    train_samples, train_stats = encode(train_convs, tokenizer, template, **enc)
    dev_samples, dev_stats = encode(dev_convs, tokenizer, template, **enc) if dev_convs else ([], None)
    if not train_samples:
        raise DataError(f"none of the {len(train_convs)} training conversations has an answer token to learn "
                        "after the cutoffs (check data.max_target_len and that conversations end with an answer)",
                        str(cfg.data.train))
    what = {"dpo": "pairs", "orpo": "pairs", "kto": "judged answers"}.get(cfg.method, "samples")
    log(f"data: {train_stats.samples} training {what} ({train_stats.tokens:,} tokens, {train_stats.loss_tokens:,} "
        f"answer tokens), {len(dev_samples)} dev {what}; prompts at the {cfg.data.max_source_len}-token cutoff: "
        f"{train_stats.source_cut}, answers at the {cfg.data.max_target_len}-token cutoff: {train_stats.target_cut}"
        + (f", dropped with nothing to learn: {train_stats.dropped_no_loss}" if train_stats.dropped_no_loss else ""),
        stream)
    return TrainingData(train_convs, dev_convs, train_samples, dev_samples, train_stats, dev_stats)
