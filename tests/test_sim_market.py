"""Pure model and renderer checks: determinism, invariants, checksum vectors from exchanges.md."""

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.sim.listings import DEFAULTS, MARKETS, select
from mdengine.sim.market import BAND, MAX_MOVE, BookModel, Instrument, checksum_string, crc32_signed


def test_BookModel_same_seed_same_book():
    inst = DEFAULTS["okx"][0]
    a, b = BookModel(inst, 7), BookModel(inst, 7)
    for i in range(50):
        assert a.step(i).bids == b.step(i).bids
    assert a.top(10) == b.top(10)
    assert BookModel(inst, 8).top(5) != a.top(5)


def test_BookModel_never_crosses_and_diffs_replay_to_the_book():
    for market, insts in DEFAULTS.items():
        for inst in insts:
            m = BookModel(inst, 3, levels=40)
            bids, asks = dict(m.bids), dict(m.asks)
            m.register_view(10)
            vb, va = m._top_dicts(10)
            for i in range(200):
                st = m.step(i)
                for side, ch in ((bids, st.bids), (asks, st.asks)):
                    for t, q in ch.items():
                        side.pop(t, None) if q == 0 else side.__setitem__(t, q)
                for side, ch in ((vb, st.views[10][0]), (va, st.views[10][1])):
                    for t, q in ch.items():
                        side.pop(t, None) if q == 0 else side.__setitem__(t, q)
                assert max(m.bids) < min(m.asks), market
                assert st.first_id > st.prev_id and st.last_id >= st.first_id
            assert (bids, asks) == (m.bids, m.asks)
            assert (vb, va) == m._top_dicts(10)
            assert len(m.bids) == 40


def test_Instrument_formats_wire_strings():
    bn = select("binance-spot", ["BTCUSDT"])[0]
    assert bn.px(6500001) == "65000.01000000" and bn.qty(0) == "0.00000000"
    okx = select("okx", ["BTC-USDT"])[0]
    assert okx.px(650000) == "65000" and okx.qty(0) == "0"
    by = [i for i in select("bybit", ["BTC/USDT:USDT"]) if i.kind == "linear"][0]
    assert by.px(650005) == "65000.50"


@given(st.integers(0, 10**12), st.sampled_from([i for m in MARKETS for i in DEFAULTS[m]]),
       st.sampled_from([None, 0, 1, 2, 8]))
def test_Instrument_formats_exactly_as_decimal_does(n, inst, dp):
    """The integer formatting equals Decimal's for every default instrument's tick and lot, any decimals asked."""
    for step in (inst.tick, inst.lot):
        places = dp if dp is not None else max(0, -Decimal(step).as_tuple().exponent)
        want = f"{Decimal(n) * Decimal(step):.{places}f}"
        if inst.strip and "." in want:
            want = want.rstrip("0").rstrip(".")
        assert inst._fmt(n, step, dp) == want


def test_checksum_vectors_from_exchanges_md():
    s = checksum_string([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]])
    assert s == "3366.1:7:3366.8:9:3366:6:3368:8" and crc32_signed(s) == -1881014294
    s = checksum_string([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]])
    assert crc32_signed(s) == 831078360
    s = checksum_string([["43231.1", "4"], ["43231", "6"]], [["43232.8", "9"], ["43232.9", "8"]])
    assert crc32_signed(s) == -1504501796


def test_select_by_pair_unified_and_native():
    assert {i.kind for i in select("okx", ["BTC/USDT"])} == {"spot", "linear"}
    assert [i.native for i in select("okx", ["BTC/USD:BTC"])] == ["BTC-USD-SWAP"]
    assert [i.native for i in select("binance-spot", ["ETHUSDT"])] == ["ETHUSDT"]


def test_a_depth_topic_id_is_consecutive_over_the_pushes_it_makes():
    """Bybit's u is per topic and +1 per push (BY-DOC orderbook): a step that changes nothing the top 50 show
    (here a book whose sizes are mostly one lot, so many changes rewrite a level with its old size: Bybit's BTCUSD
    with its sizes taken for BTC, as the simulator once had it) sends no delta, and must cost that topic no id, or
    the next delta looks like a gap."""
    from dataclasses import replace

    inst = replace(select("bybit", ["BTC/USD:BTC"])[0], ct_val="")
    assert inst.kind == "inverse"
    m = BookModel(inst, 7)
    m.register_view(50)
    last, quiet, pushes = m.topic_seq(50), 0, 0
    for i in range(2000):
        st = m.step(i)
        vb, va = st.views[50]
        if not vb and not va:
            quiet += 1
            assert st.seq(50) == last
            continue
        pushes += 1
        assert st.seq(50) == last + 1
        last = st.seq(50)
    assert quiet > 0 and pushes > 1000  # both kinds of step happened
    assert m.topic_seq(50) == last
    m.reset_sequence()
    assert m.step(2000).seq(50) == 1 == m.topic_seq(50)  # after a restart every topic starts again at u = 1


# --------------------------------------------------------------------------- prices stay positive and bounded
TICKS = ["1", "0.1", "0.01", "0.0001", "0.00001"]


@st.composite
def instruments(draw):
    tick = draw(st.sampled_from(TICKS))
    price = draw(st.floats(1.0, 1e6)) * float(tick)  # from one tick up to a million of them
    return Instrument("XUSDT", "X/USDT", "spot", tick, "0.001", price)


@given(inst=instruments(), seed=st.integers(0, 2**32), steps=st.integers(1, 1500))
@settings(max_examples=40)
def test_BookModel_prices_stay_positive_bounded_and_uncrossed(inst, seed, steps):
    """However coarse the tick for the price and however long the run (rate_hz=0 steps as fast as it can), every
    level is quoted above zero, the book never crosses, and the mid stays within MAX_MOVE of its start: a feed never
    gets a snapshot it must reject."""
    m = BookModel(inst, seed, levels=40)
    lo, hi = m.mid0 / MAX_MOVE, m.mid0 * MAX_MOVE
    for i in range(steps):
        m.step(i)
        assert min(m.bids) >= 1 and max(m.bids) < min(m.asks), (i, m.mid0, min(m.bids))
        assert min(lo, 1.0) <= m.mid <= hi, (i, m.mid, m.mid0)
    bids, asks = m.top(40)
    assert all(float(p) > 0 for p, _ in bids + asks)


def test_BookModel_walk_reverts_to_its_start_over_a_long_run():
    """A long run does not wander off: over 20,000 steps the mid stays within 5 BANDs of where it started (a plain
    random walk of the same step size drifts about 0.5 * sqrt(20,000) = 70 ticks = 14 % of this 500-tick price)."""
    inst = Instrument("XUSDT", "X/USDT", "spot", "0.0001", "1", 0.05)
    m = BookModel(inst, 1)
    worst = 0.0
    for i in range(20_000):
        m.step(i)
        worst = max(worst, abs(m.mid / m.mid0 - 1))
    assert worst < 5 * BAND, worst
