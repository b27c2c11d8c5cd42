"""Incremental detokenization and stop strings for one streamed completion.

Decoding the whole completion after every token costs O(n²); instead each token
decodes a short window (the previous token(s) and the new one) and emits the text
the window gained, which is exact for byte-level BPE and SentencePiece tokenizers and
holds back a trailing incomplete UTF-8 character (``\\ufffd``) until it completes.

Stop strings are cut from the output as OpenAI does: the text before the first
occurrence is returned, the stop string itself is not. While the end of the text could
still become a stop string, that tail is held back, so a streaming client never
receives text that the finished completion does not contain.
"""

from __future__ import annotations

from typing import Any


class TextStream:
    """Turns token ids into text deltas for one request."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tok = tokenizer
        self._stop = stop
        self._longest_stop = max((len(s) for s in stop), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # window start (token index)
        self._read = 0  # tokens whose text is already in ``text``
        self.text = ""  # all text decoded so far (stop strings not yet cut)
        self._sent = 0  # characters handed out
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def push(self, token_id: int) -> str:
        """Add one token; return the text that may be sent now (possibly empty).

        After a stop string matched, ``stopped`` is True and the returned text ends
        right before it; later pushes return nothing.
        """
        if self.stopped:
            return ""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            searched_from = max(0, len(self.text) - self._longest_stop + 1)
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
            if self._stop:
                cut = self._find_stop(searched_from)
                if cut is not None:
                    self.text = self.text[:cut]
                    self.stopped = True
                    return self._take(len(self.text))
        return self._take(len(self.text) - self._held_back())

    def finish(self) -> str:
        """The rest of the text at the end of the completion (nothing is held back)."""
        if not self.stopped and self._read < len(self._ids):
            # Tokens whose text never completed (e.g. a cut-off multi-byte character).
            self.text += self._decode(self._ids[self._prefix :])[len(self._decode(self._ids[self._prefix : self._read])) :]
            self._read = len(self._ids)
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self._sent:
            return ""
        out = self.text[self._sent : upto]
        self._sent = upto
        return out

    def _find_stop(self, start: int) -> int | None:
        hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        if not self._stop:
            return 0
        tail = self.text[-(self._longest_stop - 1) :] if self._longest_stop > 1 else ""
        for n in range(len(tail), 0, -1):
            piece = tail[-n:]
            if any(s.startswith(piece) for s in self._stop):
                return n
        return 0
