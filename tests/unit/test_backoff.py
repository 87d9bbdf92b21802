import pytest

from gateway.backoff import Backoff


def test_doubles_up_to_the_cap_then_stays():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_reset_starts_afresh_and_peek_uses_nothing_up():
    b = Backoff(1.0, 60.0)
    b.next(), b.next()
    assert b.peek() == 4.0 and b.peek() == 4.0
    b.reset()
    assert b.next() == 1.0


def test_other_factor():
    b = Backoff(0.2, 5.0, factor=3.0)
    assert [round(b.next(), 6) for _ in range(4)] == [0.2, 0.6, 1.8, 5.0]


@pytest.mark.parametrize(("initial", "maximum", "factor"),
                         [(0, 1, 2), (2, 1, 2), (1, 2, 0.5), (-1, 1, 2)])
def test_nonsense_is_refused(initial, maximum, factor):
    with pytest.raises(ValueError):
        Backoff(initial, maximum, factor)
