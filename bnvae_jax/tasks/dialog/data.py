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
from only the run's vocabulary, topics and sizes.

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
from typing import NamedTuple

import numpy as np

from bnvae_jax import fileio
from bnvae_jax.data.vocab import UNK, Vocab
from bnvae_jax.errors import DataError

_TOKEN = re.compile(r"\w+|[^\w\s]+")
DIALOG_START = ("<s>", "<d>", "</s>")
META_DIM = 4  # age / 100, education / 3, sex one-hot (female, male)
UNKNOWN_TOPIC = "<unk>"
FORMATS = ("auto", "jsonl", "text")
TEXT_SEPARATOR = "|||"
MULTI_REF_START = "<s> <d> </s>"  # the dialog-start turn as text
SPEAKER_LETTERS = ("A", "B")
_NO_META = ((0.0,) * META_DIM, (0.0,) * META_DIM)


def tokenize(text: str) -> list[str]:
    """Lower-cased WordPunct tokens of ``text``."""
    return _TOKEN.findall(text.lower())


def wrap(tokens: Sequence[str], max_len: int) -> tuple[str, ...]:
    """``<s> tokens </s>`` cut to ``max_len`` tokens, keeping the final ``</s>``."""
    words = ("<s>", *tokens, "</s>")
    return words if len(words) <= max_len else (*words[: max_len - 1], "</s>")


def _turn_tokens(text: str, max_utt_len: int) -> tuple[str, ...]:
    """``wrap(tokenize(text))``, or ``DIALOG_START`` for exactly ``<s> <d> </s>``."""
    if text.strip() == MULTI_REF_START:
        return DIALOG_START
    return wrap(tokenize(text), max_utt_len)


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


def _topic_and_meta(record: dict, where: str):
    """The record's topic name and the features of speakers A and B.

    The topic is ``UNKNOWN_TOPIC`` when the record has none; the features are
    zeros when it has no "A"/"B".
    """
    topic = _clean(record.get("topic", UNKNOWN_TOPIC)) or UNKNOWN_TOPIC
    if "A" not in record or "B" not in record:
        return topic, _NO_META
    meta = []
    for info in (record["A"], record["B"]):
        if not isinstance(info, dict):
            raise DataError(f"{where}: speaker metadata must be an object")
        try:
            age, education = (float(_clean(info[k])) for k in ("age", "education"))
            male = _clean(info["sex"]).upper() == "MALE"
        except KeyError as e:
            raise DataError(f"{where}: speaker metadata lacks {e.args[0]!r}") from None
        except ValueError:
            raise DataError(f"{where}: speaker age/education is not a number") from None
        meta.append((age / 100.0, education / 3.0, float(not male), float(male)))
    return topic, tuple(meta)


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
    topic, meta = _topic_and_meta(record, where)
    speakers, said = [0], [DIALOG_START]
    for i, utt in enumerate(utts):
        if not isinstance(utt, list) or len(utt) < 2:
            raise DataError(f"{where}: utts[{i}] must be [speaker, text, ...]")
        if utt[0] not in SPEAKER_LETTERS or not isinstance(utt[1], str):
            raise DataError(
                f"{where}: utts[{i}] needs speaker 'A' or 'B' and a text string"
            )
        speakers.append(SPEAKER_LETTERS.index(utt[0]))
        said.append(wrap(tokenize(utt[1]), max_utt_len))
    return Dialog(topic, meta, tuple(speakers), tuple(said), tuple(range(1, len(said))))


def parse_text_line(line: str, max_utt_len: int, where: str) -> Dialog:
    """One ``turn ||| … ||| response`` example."""
    turns = [t.strip() for t in line.split(TEXT_SEPARATOR)]
    if len(turns) < 2 or not turns[-1]:
        raise DataError(
            f"{where}: expected 'context {TEXT_SEPARATOR} response' with a "
            "non-empty response"
        )
    return _alternating_dialog([wrap(tokenize(t), max_utt_len) for t in turns])


def _alternating_dialog(utts, topic: str = UNKNOWN_TOPIC) -> Dialog:
    """A dialog ending with its response, speakers alternating to the responder (1)."""
    count = len(utts)
    speakers = tuple(int((count - 1 - i) % 2 == 0) for i in range(count))
    return Dialog(topic, _NO_META, speakers, tuple(utts), (count - 1,))


def read_dialogs(path: str, file_format: str, max_utt_len: int) -> list[Dialog]:
    """Every dialog of ``path``; blank lines are skipped.

    Raises:
      DataError: a missing or unreadable file, or a malformed line (one line
        naming the file and line number).
    """
    lines = fileio.read_text(path).splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: no dialogs")
    first = numbered[0][1].lstrip()
    auto = pathlib.Path(path).suffix in (".jsonl", ".json") or first.startswith("{")
    jsonl = auto if file_format == "auto" else file_format == "jsonl"
    parse = parse_jsonl_line if jsonl else parse_text_line
    return [parse(line, max_utt_len, f"{path}:{n}") for n, line in numbered]


def build_vocab(dialogs: Sequence[Dialog], max_vocab: int) -> Vocab:
    """The ``max_vocab`` most frequent training tokens after the special tokens.

    Zhao et al. keep the 10k most frequent tokens (``<s>``, ``</s>``, ``<d>``
    included) behind ``<pad>`` and ``<unk>``; the same set here, with the
    library's four special tokens first. Ties keep first-occurrence order.
    """
    counts = collections.Counter(w for d in dialogs for utt in d.utts for w in utt)
    return Vocab.from_sentences([[w for w, _ in counts.most_common(max_vocab)]])


def build_topics(dialogs: Sequence[Dialog]) -> tuple[str, ...]:
    """Topic names, ``UNKNOWN_TOPIC`` first (id 0), then sorted training topics."""
    return (UNKNOWN_TOPIC, *sorted({d.topic for d in dialogs} - {UNKNOWN_TOPIC}))


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
      topic: <int32>[N]; ``topics`` names topic ids.
      dialog: <int32>[N] which dialog of the file.
      my_meta / other_meta: <float32>[N, META_DIM] responder / other speaker.
    """

    utterances: np.ndarray
    utt_lens: np.ndarray
    context: np.ndarray
    context_lens: np.ndarray
    floors: np.ndarray
    response: np.ndarray
    topic: np.ndarray
    dialog: np.ndarray
    my_meta: np.ndarray
    other_meta: np.ndarray
    topics: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.response)

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
        ctx, response = self.context[rows], self.response[rows]
        safe, present = np.maximum(ctx, 0), ctx >= 0
        rowwise = ("context_lens", "floors", "topic", "my_meta", "other_meta")
        return {
            "context": self.utterances[safe] * present[..., None],
            "context_utt_lens": self.utt_lens[safe] * present,
            "response": self.utterances[response],
            "response_lens": self.utt_lens[response],
            **{key: getattr(self, key)[rows] for key in rowwise},
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
    rows, examples, metas = [], [], []
    for number, d in enumerate(dialogs):
        base = len(rows)
        rows += [vocab.encode(utt)[:utt_len] for utt in d.utts]
        for t in d.responses:
            window = range(max(0, t - k), t)
            me, pad = d.speakers[t], k - len(window)
            ctx = [base + i for i in window] + [-1] * pad
            floors = [int(d.speakers[i] == me) for i in window] + [0] * pad
            topic = topic_ids.get(d.topic, 0)
            examples.append((ctx, len(window), floors, base + t, topic, number))
            metas.append((d.meta[me], d.meta[1 - me]))
    if not examples:
        raise DataError("no (context, response) example in the split")
    return DialogSplit(
        np.stack([np.pad(r, (0, utt_len - len(r))) for r in rows]),
        np.asarray([len(r) for r in rows], np.int32),
        *(np.asarray(column, np.int32) for column in zip(*examples)),
        *(np.asarray(column, np.float32) for column in zip(*metas)),
        tuple(topics),
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


def _topic_names(contexts, topic) -> list[str]:
    """Each context's topic name (``UNKNOWN_TOPIC`` for None).

    Raises:
      ValueError: ``contexts`` is not a non-empty list of non-empty string
        lists, or ``topic`` not a name, None or a list of them, one a context.
    """

    def is_list(value) -> bool:
        return isinstance(value, Sequence) and not isinstance(value, (str, bytes))

    if not is_list(contexts):
        raise ValueError(
            "contexts must be a list of contexts, each a list of utterance "
            f"strings; got {type(contexts).__name__}"
        )
    if not contexts:
        raise ValueError("contexts is empty: give at least one context")
    for i, turns in enumerate(contexts):
        if not is_list(turns):
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
    many, count = is_list(topic), len(contexts)
    if many and len(topic) != count:
        raise ValueError(
            f"topic lists {len(topic)} topics for {count} contexts (give one "
            "per context, or one name for all)"
        )
    values = topic if many else [topic] * count
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(
                f"{f'topic[{i}]' if many else 'topic'} must be a topic name (str) "
                f"or None, got {type(value).__name__}"
            )
    return [UNKNOWN_TOPIC if v is None else _clean(v) or UNKNOWN_TOPIC for v in values]


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
    names = _topic_names(contexts, topic)
    for what, value, least in (
        ("max_utt_len", max_utt_len, 2),
        ("context_size", context_size, 2),
        ("width_multiple", width_multiple, 1),
    ):
        if value < least:
            raise ValueError(f"{what} must be an integer >= {least}, got {value!r}")
    count = len(contexts)
    batch_size = count if batch_size is None else batch_size
    if batch_size < count:
        raise ValueError(f"{count} contexts do not fit a batch of {batch_size}")
    kept = [
        [_turn_tokens(t, max_utt_len) for t in turns[-(context_size - 1) :]]
        for turns in contexts
    ]
    response = wrap([], max_utt_len)
    dialogs = [_alternating_dialog([*k, response], n) for k, n in zip(kept, names)]
    longest = max(len(u) for d in dialogs for u in d.utts)
    rounded = -(-longest // width_multiple) * width_multiple
    width = min(rounded, max(max_utt_len, longest))
    split = make_split(dialogs, vocab, topics, context_size=context_size, utt_len=width)
    batch = split.batch(np.arange(count), batch_size)
    unknown = [w for turns in kept for u in turns for w in u if vocab.id(w) == UNK]
    return ContextBatch(batch, len(unknown), tuple(dict.fromkeys(unknown)))


@dataclasses.dataclass(frozen=True)
class DialogData:
    """The three splits with their shared vocabulary and topic list."""

    vocab: Vocab
    topics: tuple[str, ...]
    splits: dict[str, DialogSplit]
    dialogs: dict[str, list[Dialog]]


def load_dialog_data(d) -> DialogData:
    """Reads the ``data`` section's train/valid/test files (``DialogDataConfig``).

    The vocabulary and topics come from train.

    Raises:
      DataError: a missing file or a malformed line.
    """
    files = {"train": d.train_file, "valid": d.valid_file, "test": d.test_file}
    dialogs = {s: read_dialogs(p, d.format, d.max_utt_len) for s, p in files.items()}
    vocab = build_vocab(dialogs["train"], d.max_vocab)
    topics = build_topics(dialogs["train"])
    utt_len = max(len(u) for ds in dialogs.values() for g in ds for u in g.utts)
    sizes = {"context_size": d.context_size, "utt_len": utt_len}
    # Every file has a dialog and every dialog a response: no split is empty.
    splits = {s: make_split(ds, vocab, topics, **sizes) for s, ds in dialogs.items()}
    return DialogData(vocab, topics, splits, dialogs)


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
    match = _TURN.match(turn)
    if match is None and turn.strip() != MULTI_REF_START:
        raise DataError(f"{where} must start with its speaker, 'A:' or 'B:'")
    speaker, text = match.groups() if match else ("A", turn)
    return SPEAKER_LETTERS.index(speaker), _turn_tokens(text, max_utt_len)


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
    strings = isinstance(responses, list) and all(isinstance(r, str) for r in responses)
    if not strings or not responses:
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
    speakers, context = zip(*turns)
    responses = tuple(wrap(tokenize(r), max_utt_len) for r in responses)
    responder, acts = SPEAKER_LETTERS.index(speaker.strip()), tuple(map(str, acts))
    topic, meta = _topic_and_meta(record, where)
    return MultiRefItem(context, speakers, responder, responses, acts, topic, meta)


def read_multi_ref(path: str, max_utt_len: int) -> list[MultiRefItem]:
    """Every item of a multi-reference file (Zhao et al.'s ``test_multi_ref.json``).

    Utterances are tokenised and cut like the dialog files' (``max_utt_len``
    tokens including ``<s>`` and ``</s>``).

    Raises:
      DataError: a missing or unreadable file, text that is not a JSON list,
        or a malformed item (one line naming the file and the item index).
    """
    try:
        records = json.loads(fileio.read_text(path))
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

    The example is ``make_split``'s for a dialog of the item's turns followed
    by its first (the dialog's own) response, said by the item's responder, so
    its last ``context_size - 1`` turns are kept; ``dialog`` is the item index.

    Args:
      items: parsed items (``read_multi_ref``).
      vocab: token ids (unknown words become ``<unk>``).
      topics: topic names; unknown topics get id 0 (``UNKNOWN_TOPIC``).
      context_size: window length including the response.
      utt_len: the padded utterance length U; None: the longest utterance.

    Returns:
      the split and, row by row, the words of every reference response
      without ``<s>``/``</s>``, cut to ``utt_len`` ids and with unknown words
      as ``<unk>`` (what ``Vocab.decode`` gives for a split's single
      reference).
    """
    if not items:
        raise DataError("no multi-reference item")
    if utt_len is None:
        utt_len = max(len(u) for it in items for u in (*it.context, *it.responses))
    dialogs = []
    for it in items:
        utts = (*it.context, it.responses[0])
        speakers = (*it.context_speakers, it.speaker)
        dialogs.append(Dialog(it.topic, it.meta, speakers, utts, (len(utts) - 1,)))
    split = make_split(
        dialogs, vocab, topics, context_size=context_size, utt_len=utt_len
    )
    # <s>, </s> and <pad> are the only special ids a tokenised response has.
    refs = [
        [vocab.decode(vocab.encode(r)[:utt_len]) for r in it.responses] for it in items
    ]
    return split, refs
