"""The stop-sequence hold-back logic, directly."""

from pensieve_bridge.stops import StopMatcher


def run(stops, fragments):
    m = StopMatcher(stops)
    emitted = []
    for frag in fragments:
        out, hit = m.feed(frag)
        emitted.append(out)
        if hit is not None:
            return emitted, hit
    emitted.append(m.flush())
    return emitted, None


def test_no_stops_passes_text_through():
    assert run([], ["ab", "cd"]) == (["ab", "cd", ""], None)


def test_match_inside_one_fragment_emits_only_text_before_it():
    assert run(["END"], ["abcENDxyz"]) == (["abc"], "END")


def test_match_split_across_fragments_is_held_then_dropped():
    emitted, hit = run(["\n\n"], ["hello\n", "\nworld"])
    assert emitted == ["hello", ""]
    assert hit == "\n\n"


def test_possible_prefix_is_held_until_resolved_then_released():
    m = StopMatcher(["STOP"])
    assert m.feed("abST") == ("ab", None)
    assert m.held == "ST"
    assert m.feed("x") == ("STx", None)
    assert m.held == ""


def test_held_prefix_is_flushed_at_the_end():
    emitted, hit = run(["STOP"], ["abc", "STO"])
    assert hit is None
    assert "".join(emitted) == "abcSTO"
    assert emitted[-1] == "STO"


def test_earliest_match_wins_among_several_stops():
    assert run(["world", "lo"], ["hello world"]) == (["hel"], "lo")


def test_same_start_prefers_the_shorter_stop():
    assert run(["abc", "ab"], ["xxabc"]) == (["xx"], "ab")


def test_longest_held_tail_covers_overlapping_prefixes():
    m = StopMatcher(["aab"])
    assert m.feed("xaa") == ("x", None)
    assert m.feed("a") == ("a", None)  # "aaa": only the last "aa" can still start "aab"
    assert m.feed("b") == ("", "aab")


def test_match_spanning_many_single_char_fragments():
    emitted, hit = run(["</end>"], list("text</end>more"))
    assert "".join(emitted) == "text"
    assert hit == "</end>"


def test_empty_stop_strings_are_ignored():
    assert run(["", "Z"], ["abc"]) == (["abc", ""], None)


def test_after_a_match_nothing_more_is_emitted():
    m = StopMatcher(["x"])
    assert m.feed("axb") == ("a", "x")
    assert m.feed("more") == ("", "x")
    assert m.flush() == ""


def test_non_ascii_stops_and_text():
    assert run(["。"], ["你好", "。再见"]) == (["你好", ""], "。")
