"""Incremental detokenization and stop strings (``adapterhub.serving.text``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapterhub.basemodels import load_base
from adapterhub.serving.text import TextStream


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_base("smollm2-135m-instruct").tokenizer


TEXTS = [
    "The capital of France is Paris.",
    "Überraschung: naïve café — 東京 🚀 done",
    "line one\nline two\n\n  indented",
]


@pytest.mark.realmodel
@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_decoded_text(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer)
    pieces = [stream.push(t) for t in ids]
    pieces.append(stream.finish())
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == stream.text
    assert all("\ufffd" not in p for p in pieces)  # half a character is never sent


@pytest.mark.realmodel
@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=1, max_size=40), stop=st.text(min_size=1, max_size=4))
def test_stop_is_cut_and_never_streamed(tokenizer, text: str, stop: str) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tokenizer.decode(ids, skip_special_tokens=True)
    stream = TextStream(tokenizer, (stop,))
    sent = ""
    for t in ids:
        sent += stream.push(t)
        if stream.stopped:
            break
    sent += stream.finish()
    if stop in full:
        assert stream.stopped and sent == full[: full.index(stop)]
    else:
        assert not stream.stopped and sent == full


@pytest.mark.realmodel
def test_earliest_of_several_stops_wins(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer("alpha beta gamma delta", add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, ("delta", "beta"))
    out = "".join(stream.push(t) for t in ids) + stream.finish()
    assert out == "alpha " and stream.stopped


@pytest.mark.realmodel
def test_a_possible_stop_prefix_is_held_back(tokenizer) -> None:  # type: ignore[no-untyped-def]
    stream = TextStream(tokenizer, ("END",))
    sent = ""
    for t in tokenizer("Hello E", add_special_tokens=False)["input_ids"]:
        sent += stream.push(t)
    assert "E" not in sent  # "E" may still become "END"
    assert sent + stream.finish() == "Hello E"  # ...and is released at the end
