r"""Dialog corpora as (context window, response) examples, Zhao et al.'s preprocessing.

Two file formats:

* ``jsonl``: Zhao et al.'s Switchboard, one dialog a line: ``{"topic": ..., "A":
  {age, education, sex, ...}, "B": {...}, "utts": [[speaker, text, [act, ...]],
  ...]}``. Every utterance is a response once, its context the up to
  ``context_size - 1`` utterances before it; each dialog starts with the
  pseudo-utterance ``<s> <d> </s>``.
* ``text``: one example a line, ``turn ||| turn ||| ... ||| response`` (oldest
  turn first; at least one context turn). Speakers alternate and end with the
  responder; there is no topic and no speaker metadata (zeros).

Zhao et al.'s multi-reference test file (``test_multi_ref.json``) is a third
reader, for scoring only: ``read_multi_ref`` and ``multi_ref_split``.

``context_batch`` turns new contexts (lists of turn strings) into a model batch
without the training files: only the run's vocabulary, topics and sizes.

Utterances are lower-cased, split as NLTK's ``WordPunctTokenizer`` does
(``\w+|[^\w\s]+``), wrapped in ``<s> … </s>`` and cut to ``max_utt_len``
tokens keeping the final ``</s>``. Examples index a table of utterances, so a
batch is a gather and every batch has the same shapes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
from collections.abc import Sequence
from numbers import Integral
from typing import NamedTuple

import numpy as np

from bnvae_jax.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Vocab
from bnvae_jax.errors import DataError

_TOKEN = re.compile(r"\w+|[^\w\s]+")
DIALOG_START = ("<s>", "<d>", "</s>")
META_DIM = 4  # age / 100, education / 3, sex one-hot (female, male)
UNKNOWN_TOPIC = "<unk>"
FORMATS = ("auto", "jsonl", "text")
TEXT_SEPARATOR = "|||"


def tokenize(text: str) -> list[str]:
    """Lower-cased WordPunct tokens of ``text``."""
    return _TOKEN.findall(text.lower())


def wrap(tokens: Sequence[str], max_len: int) -> tuple[str, ...]:
    """``<s> tokens </s>`` cut to ``max_len`` tokens, keeping the final ``</s>``."""
    words = ["<s>", *tokens, "</s>"]
    if len(words) > max_len:
        words = words[: max_len - 1] + words[-1:]
    return tuple(words)


@dataclasses.dataclass(frozen=True)
class Dialog:
    """One tokenised dialog.

    Attributes:
      topic: the topic name (``UNKNOWN_TOPIC`` when the format has none).
      meta: speaker features of speakers 0 (A) and 1 (B), ``META_DIM`` each.
      speakers: the speaker (0 or 1) of each utterance.
      utts: each utterance's tokens, ``<s> … </s>``.
      responses: positions in ``utts`` that are responses (targets).
    """

    topic: str
    meta: tuple[tuple[float, ...], tuple[float, ...]]
    speakers: tuple[int, ...]
    utts: tuple[tuple[str, ...], ...]
    responses: tuple[int, ...]


def _clean(value) -> str:
    return str(value).strip().strip('"').strip()


def _speaker_meta(info, where: str) -> tuple[float, ...]:
    if not isinstance(info, dict):
        raise DataError(f"{where}: speaker metadata must be an object")
    try:
        age = float(_clean(info["age"]))
        education = float(_clean(info["education"]))
        sex = _clean(info["sex"]).upper()
    except KeyError as e:
        raise DataError(f"{where}: speaker metadata lacks {e.args[0]!r}") from None
    except ValueError:
        raise DataError(f"{where}: speaker age/education is not a number") from None
    male = sex == "MALE"
    return (age / 100.0, education / 3.0, float(not male), float(male))


def _dialog_meta(record: dict, where: str):
    """Features of speakers A and B; zeros when the record has no "A"/"B"."""
    if "A" in record and "B" in record:
        return (_speaker_meta(record["A"], where), _speaker_meta(record["B"], where))
    return ((0.0,) * META_DIM, (0.0,) * META_DIM)


def parse_jsonl_line(line: str, max_utt_len: int, where: str) -> Dialog:
    """One Switchboard dialog; ``where`` ("file:line") prefixes every error."""
    try:
        record = json.loads(line)
    except ValueError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: a dialog must be a JSON object")
    utts = record.get("utts")
    if not isinstance(utts, list) or not utts:
        raise DataError(f"{where}: 'utts' must be a non-empty list")
    meta = _dialog_meta(record, where)
    speakers, tokens = [0], [DIALOG_START]
    for i, utt in enumerate(utts):
        if not isinstance(utt, list) or len(utt) < 2:
            raise DataError(f"{where}: utts[{i}] must be [speaker, text, ...]")
        speaker, text = utt[0], utt[1]
        if speaker not in ("A", "B") or not isinstance(text, str):
            raise DataError(
                f"{where}: utts[{i}] needs speaker 'A' or 'B' and a text string"
            )
        speakers.append(int(speaker == "B"))
        tokens.append(wrap(tokenize(text), max_utt_len))
    topic = _clean(record.get("topic", UNKNOWN_TOPIC)) or UNKNOWN_TOPIC
    return Dialog(
        topic, meta, tuple(speakers), tuple(tokens), tuple(range(1, len(tokens)))
    )


def parse_text_line(line: str, max_utt_len: int, where: str) -> Dialog:
    """One ``turn ||| … ||| response`` example."""
    turns = [t.strip() for t in line.split(TEXT_SEPARATOR)]
    if len(turns) < 2 or not turns[-1]:
        raise DataError(
            f"{where}: expected 'context {TEXT_SEPARATOR} response' with a "
            "non-empty response"
        )
    return _alternating_dialog(tuple(wrap(tokenize(t), max_utt_len) for t in turns))


def _alternating_dialog(utts: tuple[tuple[str, ...], ...]) -> Dialog:
    """The text format's example: ``utts`` end with the response.

    Speakers alternate and end with the responder (speaker 1); no topic, no
    speaker metadata (zeros).
    """
    count = len(utts)
    speakers = tuple(int((count - 1 - i) % 2 == 0) for i in range(count))
    zeros = (0.0,) * META_DIM
    return Dialog(UNKNOWN_TOPIC, (zeros, zeros), speakers, utts, (count - 1,))


def _detect_format(path: pathlib.Path, first: str) -> str:
    if path.suffix in (".jsonl", ".json"):
        return "jsonl"
    return "jsonl" if first.lstrip().startswith("{") else "text"


def read_dialogs(path: str, file_format: str, max_utt_len: int) -> list[Dialog]:
    """Every dialog of ``path``; blank lines are skipped.

    Raises:
      DataError: a missing or unreadable file, or a malformed line (one line
        naming the file and line number).
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found")
    try:
        lines = file.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {e.start})") from None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: no dialogs")
    if file_format == "auto":
        file_format = _detect_format(file, numbered[0][1])
    parse = parse_jsonl_line if file_format == "jsonl" else parse_text_line
    return [parse(line, max_utt_len, f"{path}:{n}") for n, line in numbered]


def build_vocab(dialogs: Sequence[Dialog], max_vocab: int) -> Vocab:
    """The ``max_vocab`` most frequent training tokens after the special tokens.

    Zhao et al. keep the 10k most frequent tokens (``<s>``, ``</s>``, ``<d>``
    included) behind ``<pad>`` and ``<unk>``; the same set here, with the
    library's four special tokens first. Ties keep first-occurrence order.
    """
    counts = collections.Counter(
        word for d in dialogs for utt in d.utts for word in utt
    )
    ranked = [w for w, _ in counts.most_common()[:max_vocab]]
    words = dict.fromkeys(SPECIAL_TOKENS)
    words.update(dict.fromkeys(ranked))
    return Vocab(tuple(words))


def build_topics(dialogs: Sequence[Dialog]) -> tuple[str, ...]:
    """Topic names, ``UNKNOWN_TOPIC`` first (id 0), then sorted training topics."""
    names = sorted({d.topic for d in dialogs} - {UNKNOWN_TOPIC})
    return (UNKNOWN_TOPIC, *names)


@dataclasses.dataclass(frozen=True)
class DialogSplit:
    """Examples of one split as index arrays into an utterance table.

    Attributes:
      utterances: <int32>[M, U] token ids, 0-padded.
      utt_lens: <int32>[M].
      context: <int32>[N, K] utterance indices, oldest first, left-aligned;
        -1 after ``context_lens``.
      context_lens: <int32>[N] context utterances (>= 1).
      floors: <int32>[N, K] 1 where the context utterance's speaker is the
        responder.
      response: <int32>[N] utterance index of the response.
      topic: <int32>[N].
      my_meta / other_meta: <float32>[N, META_DIM] responder / other speaker.
      dialog: <int32>[N] which dialog of the file; ``topics`` names topic ids.
    """

    utterances: np.ndarray
    utt_lens: np.ndarray
    context: np.ndarray
    context_lens: np.ndarray
    floors: np.ndarray
    response: np.ndarray
    topic: np.ndarray
    my_meta: np.ndarray
    other_meta: np.ndarray
    dialog: np.ndarray
    topics: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.response)

    @property
    def max_context(self) -> int:
        return self.context.shape[1]

    def batch(self, indices: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """The examples ``indices`` padded to ``batch_size`` rows (mask 0).

        Returns:
          context <int32>[B, K, U], context_utt_lens <int32>[B, K],
          context_lens, floors, response <int32>[B, U], response_lens,
          topic, my_meta, other_meta and mask <float32>[B].
        """
        indices = np.asarray(indices, np.int64)
        real = len(indices)
        if real > batch_size or real == 0:
            raise ValueError(f"{real} examples for a batch of {batch_size}")
        rows = np.concatenate([indices, np.full(batch_size - real, indices[0])])
        ctx = self.context[rows]
        safe = np.maximum(ctx, 0)
        present = ctx >= 0
        return {
            "context": self.utterances[safe] * present[..., None],
            "context_utt_lens": self.utt_lens[safe] * present,
            "context_lens": self.context_lens[rows],
            "floors": self.floors[rows],
            "response": self.utterances[self.response[rows]],
            "response_lens": self.utt_lens[self.response[rows]],
            "topic": self.topic[rows],
            "my_meta": self.my_meta[rows],
            "other_meta": self.other_meta[rows],
            "mask": (np.arange(batch_size) < real).astype(np.float32),
        }


def make_split(
    dialogs: Sequence[Dialog],
    vocab: Vocab,
    topics: Sequence[str],
    *,
    context_size: int,
    utt_len: int,
) -> DialogSplit:
    """Indexes every response of ``dialogs`` with its context window.

    Args:
      dialogs: parsed dialogs.
      vocab: token ids (unknown words become ``<unk>``).
      topics: topic names; unknown topics get id 0.
      context_size: window length including the response (Zhao's
        ``backward_size``), so contexts hold up to ``context_size - 1`` turns.
      utt_len: the padded utterance length U.
    """
    topic_ids = {t: i for i, t in enumerate(topics)}
    k = context_size - 1
    utts, lens = [], []
    columns = collections.defaultdict(list)
    for number, d in enumerate(dialogs):
        base = len(utts)
        for utt in d.utts:
            ids = vocab.encode(utt)[:utt_len]
            utts.append(np.pad(ids, (0, utt_len - len(ids))))
            lens.append(len(ids))
        for t in d.responses:
            start = max(0, t - k)
            window = list(range(start, t))
            me = d.speakers[t]
            columns["context"].append(
                [base + i for i in window] + [-1] * (k - len(window))
            )
            columns["floors"].append(
                [int(d.speakers[i] == me) for i in window] + [0] * (k - len(window))
            )
            columns["context_lens"].append(len(window))
            columns["response"].append(base + t)
            columns["topic"].append(topic_ids.get(d.topic, 0))
            columns["my_meta"].append(d.meta[me])
            columns["other_meta"].append(d.meta[1 - me])
            columns["dialog"].append(number)
    if not columns["response"]:
        raise DataError("no (context, response) example in the split")
    ints = {
        k_: np.asarray(v, np.int32) for k_, v in columns.items() if "meta" not in k_
    }
    return DialogSplit(
        utterances=np.stack(utts).astype(np.int32),
        utt_lens=np.asarray(lens, np.int32),
        my_meta=np.asarray(columns["my_meta"], np.float32),
        other_meta=np.asarray(columns["other_meta"], np.float32),
        topics=tuple(topics),
        **ints,
    )


class ContextBatch(NamedTuple):
    """A model batch of raw contexts (``context_batch``).

    Attributes:
      batch: the arrays ``DialogCVAE.condition`` and ``generate`` read, with the
        keys, dtypes and layout of ``DialogSplit.batch``.
      oov: tokens of the kept turns that are not in the vocabulary (``<unk>`` in
        ``batch``), over all contexts.
      unknown_words: those tokens' distinct words, in order of first occurrence.
    """

    batch: dict[str, np.ndarray]
    oov: int
    unknown_words: tuple[str, ...]


def _context_turns(contexts) -> list[Sequence[str]]:
    """``contexts`` checked: a non-empty list of non-empty lists of strings."""
    if isinstance(contexts, (str, bytes)) or not isinstance(contexts, Sequence):
        raise ValueError(
            "contexts must be a list of contexts, each a list of utterance "
            f"strings; got {type(contexts).__name__}"
        )
    if not contexts:
        raise ValueError("contexts is empty: give at least one context")
    for i, turns in enumerate(contexts):
        if isinstance(turns, (str, bytes)) or not isinstance(turns, Sequence):
            raise ValueError(
                f"contexts[{i}] must be a list of utterance strings (oldest "
                f"first), got {type(turns).__name__}; for one context pass "
                "[turns]"
            )
        if not turns:
            raise ValueError(f"contexts[{i}] has no turns")
        for j, turn in enumerate(turns):
            if not isinstance(turn, str):
                raise ValueError(
                    f"contexts[{i}][{j}] must be a string, got {type(turn).__name__}"
                )
    return list(contexts)


def _context_topics(topic, count: int) -> list[str]:
    """One topic name per context (``UNKNOWN_TOPIC`` for None)."""

    def name(value, where: str) -> str:
        if value is None:
            return UNKNOWN_TOPIC
        if not isinstance(value, str):
            raise ValueError(
                f"{where} must be a topic name (str) or None, got "
                f"{type(value).__name__}"
            )
        return _clean(value) or UNKNOWN_TOPIC

    if isinstance(topic, (list, tuple)):
        if len(topic) != count:
            raise ValueError(
                f"topic lists {len(topic)} topics for {count} contexts (give one "
                "per context, or one name for all)"
            )
        return [name(t, f"topic[{i}]") for i, t in enumerate(topic)]
    return [name(topic, "topic")] * count


def context_batch(
    contexts: Sequence[Sequence[str]],
    vocab: Vocab,
    topics: Sequence[str],
    *,
    max_utt_len: int,
    context_size: int,
    topic: str | None | Sequence[str | None] = None,
    width_multiple: int = 8,
    batch_size: int | None = None,
) -> ContextBatch:
    """The model batch of new contexts, read as training read the text format.

    Each context is a list of utterance strings, oldest first. Its last
    ``context_size - 1`` turns are kept (as ``make_split`` keeps them), each
    lower-cased, tokenised and wrapped in ``<s> … </s>`` cut to ``max_utt_len``
    tokens (``tokenize``, ``wrap``; a turn that is exactly ``<s> <d> </s>`` is
    the Switchboard dialog-start turn, as in the multi-reference file). The
    speakers alternate and the responder is the speaker who did not say the
    last turn, so floors are 1 on every second turn counting back from the
    second-to-last. Speaker metadata are zeros (as for the text format); the
    response is a dummy ``<s> </s>``. Words outside ``vocab`` become ``<unk>``.

    The utterance width U is the longest kept utterance rounded up to a
    multiple of ``width_multiple``, capped at ``max_utt_len`` (or the longest
    utterance where that is longer), so a jitted caller compiles once per
    width bucket. Padding does not change the model's outputs.

    Args:
      contexts: B contexts, each a non-empty list of strings, oldest first.
      vocab: the run's vocabulary.
      topics: the run's topic names (``DialogData.topics``).
      max_utt_len: the run's ``data.max_utt_len``.
      context_size: the run's ``data.context_size``.
      topic: a topic name for every context, or a list with one per context;
        None or a name outside ``topics`` gets id 0 (unknown topic).
      width_multiple: U is a multiple of this (up to the cap).
      batch_size: rows of the batch; rows past the contexts repeat the first
        with mask 0. None: B.

    Returns:
      the batch (context <int32>[R, context_size - 1, U], context_utt_lens,
      context_lens, floors, response <int32>[R, U], response_lens, topic,
      my_meta, other_meta, mask <float32>[R] 1 on the B real rows) and the
      out-of-vocabulary tokens of the kept turns.

    Raises:
      ValueError: empty ``contexts`` or a context without turns, a turn that is
        not a string, a ``topic`` that is not a string, None or a list of
        them, or sizes out of range.
    """
    contexts = _context_turns(contexts)
    names = _context_topics(topic, len(contexts))
    for what, value, least in (
        ("max_utt_len", max_utt_len, 2),
        ("context_size", context_size, 2),
        ("width_multiple", width_multiple, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < least:
            raise ValueError(f"{what} must be an integer >= {least}, got {value!r}")
    count = len(contexts)
    if batch_size is None:
        batch_size = count
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
        raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < count:
        raise ValueError(f"{count} contexts do not fit a batch of {batch_size}")

    def tokens(turn: str) -> tuple[str, ...]:
        if turn.strip() == MULTI_REF_START:
            return DIALOG_START
        return wrap(tokenize(turn), max_utt_len)

    response = wrap([], max_utt_len)
    dialogs = [
        dataclasses.replace(
            _alternating_dialog(
                (*(tokens(t) for t in turns[-(context_size - 1) :]), response)
            ),
            topic=name,
        )
        for turns, name in zip(contexts, names)
    ]
    longest = max(len(u) for d in dialogs for u in d.utts)
    cap = max(max_utt_len, longest)
    width = min(-(-longest // width_multiple) * width_multiple, cap)
    split = make_split(dialogs, vocab, topics, context_size=context_size, utt_len=width)
    unknown = [
        word
        for d in dialogs
        for utt in d.utts[:-1]  # the kept turns, not the dummy response
        for word in utt
        if vocab.id(word) == UNK
    ]
    return ContextBatch(
        split.batch(np.arange(count), batch_size),
        len(unknown),
        tuple(dict.fromkeys(unknown)),
    )


@dataclasses.dataclass(frozen=True)
class DialogData:
    """The three splits with their shared vocabulary and topic list."""

    vocab: Vocab
    topics: tuple[str, ...]
    splits: dict[str, DialogSplit]
    dialogs: dict[str, list[Dialog]]
    files: dict[str, str]


def load_dialog_data(
    files: dict[str, str],
    *,
    file_format: str,
    max_vocab: int,
    max_utt_len: int,
    context_size: int,
) -> DialogData:
    """Reads train/valid/test, builds the vocabulary and topics from train.

    Raises:
      DataError: a missing file or a malformed line.
    """
    dialogs = {
        split: read_dialogs(path, file_format, max_utt_len)
        for split, path in files.items()
    }
    vocab = build_vocab(dialogs["train"], max_vocab)
    topics = build_topics(dialogs["train"])
    utt_len = max(len(u) for ds in dialogs.values() for d in ds for u in d.utts)
    splits = {}
    for split, ds in dialogs.items():
        try:
            splits[split] = make_split(
                ds, vocab, topics, context_size=context_size, utt_len=utt_len
            )
        except DataError as e:
            raise DataError(f"{files[split]}: {e}") from None
    return DialogData(vocab, topics, splits, dialogs, dict(files))


# -- Zhao et al.'s multi-reference test file -----------------------------------
#
# ``test_multi_ref.json``, released with NeuralDialog-CVAE, is one JSON list.
# Each item is a test context with every response collected for it:
#
#   {"context": ["A: <s> <d> </s>", "B: well i think ...", ...],
#    "responses": ["the test dialog's own reply", "another valid reply", ...],
#    "resp_dialog_acts": ["statement-non-opinion", ...],
#    "speaker": "A"}
#
# ``speaker`` is the responder. The file has no topic and no speaker metadata;
# items that do carry "topic" or "A"/"B" (as in the JSONL dialogs) keep them.

MULTI_REF_START = "<s> <d> </s>"  # the dialog-start turn as the file writes it
SPEAKER_LETTERS = ("A", "B")
_TURN = re.compile(r"\s*([AB])\s*:(.*)", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class MultiRefItem:
    """One context of the multi-reference file with all its valid responses.

    Attributes:
      context: the context turns' tokens, oldest first, ``<s> … </s>`` each;
        the dialog-start turn is ``DIALOG_START``.
      context_speakers: the speaker of each context turn, 0 (A) or 1 (B).
      speaker: the responder, 0 (A) or 1 (B).
      responses: every reference response's tokens, ``<s> … </s>``; the first
        is the test dialog's own next utterance.
      resp_dialog_acts: the file's dialog-act label of each response (empty
        when the item has none).
      topic: the topic name (``UNKNOWN_TOPIC`` when the item has none).
      meta: speaker features of A and B (zeros when the item has none).
    """

    context: tuple[tuple[str, ...], ...]
    context_speakers: tuple[int, ...]
    speaker: int
    responses: tuple[tuple[str, ...], ...]
    resp_dialog_acts: tuple[str, ...]
    topic: str
    meta: tuple[tuple[float, ...], tuple[float, ...]]


def _context_turn(turn, max_utt_len: int, where: str) -> tuple[int, tuple[str, ...]]:
    """(speaker, tokens) of a ``"A: text"`` turn; a bare dialog start is A's."""
    if not isinstance(turn, str):
        raise DataError(f"{where} must be a string 'A: text' or 'B: text'")
    if turn.strip() == MULTI_REF_START:
        return 0, DIALOG_START
    match = _TURN.match(turn)
    if match is None:
        raise DataError(f"{where} must start with its speaker, 'A:' or 'B:'")
    speaker = SPEAKER_LETTERS.index(match.group(1))
    text = match.group(2).strip()
    if text == MULTI_REF_START:
        return speaker, DIALOG_START
    return speaker, wrap(tokenize(text), max_utt_len)


def parse_multi_ref_item(record, max_utt_len: int, where: str) -> MultiRefItem:
    """One item of the multi-reference file; ``where`` prefixes every error."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: an item must be a JSON object")
    missing = [k for k in ("context", "responses", "speaker") if k not in record]
    if missing:
        raise DataError(f"{where}: lacks {', '.join(repr(k) for k in missing)}")
    context, responses = record["context"], record["responses"]
    if not isinstance(context, list) or not context:
        raise DataError(f"{where}: 'context' must be a non-empty list of turns")
    if (
        not isinstance(responses, list)
        or not responses
        or not all(isinstance(r, str) for r in responses)
    ):
        raise DataError(f"{where}: 'responses' must be a non-empty list of strings")
    speaker = record["speaker"]
    if not isinstance(speaker, str) or speaker.strip() not in SPEAKER_LETTERS:
        raise DataError(f"{where}: 'speaker' must be 'A' or 'B', got {speaker!r}")
    acts = record.get("resp_dialog_acts", [])
    if not isinstance(acts, list):
        raise DataError(f"{where}: 'resp_dialog_acts' must be a list")
    turns = [
        _context_turn(turn, max_utt_len, f"{where}: context[{i}]")
        for i, turn in enumerate(context)
    ]
    return MultiRefItem(
        context=tuple(tokens for _, tokens in turns),
        context_speakers=tuple(s for s, _ in turns),
        speaker=SPEAKER_LETTERS.index(speaker.strip()),
        responses=tuple(wrap(tokenize(r), max_utt_len) for r in responses),
        resp_dialog_acts=tuple(str(a) for a in acts),
        topic=_clean(record.get("topic", UNKNOWN_TOPIC)) or UNKNOWN_TOPIC,
        meta=_dialog_meta(record, where),
    )


def read_multi_ref(path: str, max_utt_len: int) -> list[MultiRefItem]:
    """Every item of a multi-reference file (Zhao et al.'s ``test_multi_ref.json``).

    Utterances are tokenised and cut like the dialog files' (``max_utt_len``
    tokens including ``<s>`` and ``</s>``).

    Raises:
      DataError: a missing or unreadable file, text that is not a JSON list,
        or a malformed item (one line naming the file and the item index).
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {e.start})") from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of items, got a JSON object")
    if not records:
        raise DataError(f"{path}: no items")
    return [
        parse_multi_ref_item(record, max_utt_len, f"{path}: item {i}")
        for i, record in enumerate(records)
    ]


def multi_ref_split(
    items: Sequence[MultiRefItem],
    vocab: Vocab,
    topics: Sequence[str],
    *,
    context_size: int,
    utt_len: int | None = None,
) -> tuple[DialogSplit, list[list[list[str]]]]:
    """One example per item, and its reference word lists.

    The example's context is the item's last ``context_size - 1`` turns (as in
    ``make_split``), its floors 1 for the responder's turns, its response the
    item's first (the dialog's own) response; ``dialog`` is the item index.

    Args:
      items: parsed items (``read_multi_ref``).
      vocab: token ids (unknown words become ``<unk>``).
      topics: topic names; unknown topics get id 0 (``UNKNOWN_TOPIC``).
      context_size: window length including the response.
      utt_len: the padded utterance length U; None: the longest utterance.

    Returns:
      the split and, row by row, the words of every reference response
      without ``<s>``/``</s>``, cut to ``utt_len`` ids and with unknown words
      as ``<unk>`` (what ``reference_words`` of the training loop gives for a
      split's single reference).
    """
    if not items:
        raise DataError("no multi-reference item")
    if utt_len is None:
        utt_len = max(len(u) for it in items for u in (*it.context, *it.responses))
    topic_ids = {t: i for i, t in enumerate(topics)}
    k = context_size - 1
    special = (PAD, BOS, EOS)

    def ids(tokens: Sequence[str]) -> np.ndarray:
        return vocab.encode(tokens)[:utt_len]

    utts, lens, references = [], [], []
    columns = collections.defaultdict(list)
    for number, item in enumerate(items):
        count = len(item.context)
        kept = range(max(0, count - k), count)
        base = len(utts)
        for tokens in [*(item.context[i] for i in kept), item.responses[0]]:
            row = ids(tokens)
            utts.append(np.pad(row, (0, utt_len - len(row))))
            lens.append(len(row))
        pad = [-1] * (k - len(kept))
        columns["context"].append([base + j for j in range(len(kept))] + pad)
        columns["floors"].append(
            [int(item.context_speakers[i] == item.speaker) for i in kept]
            + [0] * len(pad)
        )
        columns["context_lens"].append(len(kept))
        columns["response"].append(base + len(kept))
        columns["topic"].append(topic_ids.get(item.topic, 0))
        columns["my_meta"].append(item.meta[item.speaker])
        columns["other_meta"].append(item.meta[1 - item.speaker])
        columns["dialog"].append(number)
        references.append(
            [
                [vocab.words[i] for i in ids(r).tolist() if i not in special]
                for r in item.responses
            ]
        )
    ints = {
        k_: np.asarray(v, np.int32) for k_, v in columns.items() if "meta" not in k_
    }
    split = DialogSplit(
        utterances=np.stack(utts).astype(np.int32),
        utt_lens=np.asarray(lens, np.int32),
        my_meta=np.asarray(columns["my_meta"], np.float32),
        other_meta=np.asarray(columns["other_meta"], np.float32),
        topics=tuple(topics),
        **ints,
    )
    return split, references
