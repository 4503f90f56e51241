"""More stop sequences than an OpenAI-compatible server takes (4; gsm8k_platinum_cot_llama and
humaneval send 5): the first 4 go to the server, the rest cut the answer client-side."""

from __future__ import annotations

from adapter.client import MAX_STOP, cut_at, split_stops


def test_at_most_four_stops_are_sent_and_the_rest_cut_the_answer() -> None:
    until = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    payload = {"prompt": "x", "stop": list(until)}
    rest = split_stops(payload)
    assert payload["stop"] == until[:MAX_STOP] and rest == ["\nprint"]
    assert cut_at("    return a + b\nprint(add(1, 2))", rest) == "    return a + b"
    assert cut_at("    return a + b\n", rest) == "    return a + b\n"


def test_four_or_fewer_stops_are_left_as_lm_eval_sends_them() -> None:
    payload = {"prompt": "x", "stop": ["\n\n", "Q:"]}
    assert split_stops(payload) == [] and payload["stop"] == ["\n\n", "Q:"]
    assert split_stops({"prompt": "x", "stop": "Q:"}) == []
