"""srv6pm.quote: a quoted value is one short line, whatever the value; the work is bounded by the limit."""

from srv6pm.quote import QUOTE_LIMIT, quote


def test_text_and_bytes_are_cut_with_their_length():
    assert quote("abc") == "'abc'"
    assert quote("a" * 10000) == "'" + "a" * (QUOTE_LIMIT - 2) + "… (10000 characters)"
    assert quote("x\n\x1b[31m") == "'x\\n\\x1b[31m'"  # control characters escaped: the message stays one line
    assert quote(b"\0" * 1000).endswith("… (1000 bytes)")


def test_a_whole_number_of_any_length():
    assert quote(12345) == "12345"
    assert quote(-10**70) == "-" + "1" + "0" * (QUOTE_LIMIT - 3) + "… (71 digits)"
    # beyond what int -> str converts (4300 digits): its leading digits and its length, not an error
    assert quote(7 * 10**6000) == "7" + "0" * (QUOTE_LIMIT - 2) + "… (6001 digits)"
    assert quote(True) == "True" and quote(1e400) == "inf" and quote(None) == "None"


def test_a_list_is_shown_a_few_members_and_levels_deep():
    assert quote([1, 2, 3]) == "[1, 2, 3]" and quote({"a": 1}) == "{'a': 1}"
    assert quote(list(range(100))) == "[0, 1, 2, 3, 4, 5, ...] (100 members)"
    bomb = [1]
    for _ in range(7):  # what YAML aliases make of a few lines: 9**7 leaves written out (and 9**40 as easily)
        bomb = [bomb] * 9
    text = quote(bomb)
    assert text == "[[[[...], [...], [...], [...], [...], [...], ...], [[...], … (9 members)"
