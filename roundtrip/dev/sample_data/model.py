"""The marketplace's sample data as Arrow tables, made deterministically from a seed.

Everything is vectorized with NumPy and pyarrow.compute (no per-row Python), so ten million
orders take minutes. Events are generated in fixed-size chunks, each with its own random stream
``(seed, stream, chunk)``, so the output depends only on the seed and the sizes, not on memory.

Defects of the data contract (docs/contract.md) are injected on purpose (see ``DefectRates``); tests and dbt models
rely on every kind being present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from roundtrip.core.contract import BRONZE_FIELDS

CATEGORIES = (
    "books",
    "electronics",
    "fashion",
    "home",
    "garden",
    "toys",
    "sports",
    "beauty",
    "food",
    "music",
)
EVENT_TYPES = ("search", "view", "click", "add_to_cart")
# Text with accents, quotes, apostrophes, CJK and emoji: the loaders and syncs must keep it exact.
FIRST_NAMES = (
    "Zoë",
    "José",
    "Amélie",
    "Łukasz",
    "Ørjan",
    "Siobhán",
    "李雷",
    "Ana",
    "Jean-Noël",
    "Chloé",
    "D'Artagnan",
    'Mary "May"',
    "Björn",
    "Çağla",
    "Noé",
    "Renée",
    "Olivia",
    "Hugo",
    "Inès",
    "Yūki",
)
LAST_NAMES = (
    "O'Brien",
    "García",
    "Müller",
    "Lefèvre",
    "Nguyễn",
    "Smith",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Martin",
    "N'Diaye",
    'Bernard "Ben"',
    "Özdemir",
    "Durand",
    "Petit",
    "Moreau",
)
ADJECTIVES = (
    "Vintage",
    "Eco-friendly",
    "Deluxe",
    "Mini",
    "Pro",
    "Classic",
    "Handmade",
    "Smart",
    "Crème",
    "Naïve",
    '"Signature"',
    "L'Original",
    "Ultra",
    "Rétro",
    "Compact",
)
NOUNS = (
    "lamp",
    "backpack",
    "novel",
    "headphones",
    "teapot",
    "sneakers",
    "puzzle",
    "yoga mat",
    "café table",
    "jacket",
    "guitar",
    "blender",
    "scarf",
    "board game",
    "perfume",
    "rose bush",
)
SEARCH_QUERIES = (
    "lamp",
    "chaussures d'été",
    '"vintage" lamp',
    "café crème",
    "naïve art",
    "O'Reilly book",
    "yoga mat 🧘",
    "écouteurs sans fil",
    "board game",
    "guitare",
    "北京 tea",
    "scarf; drop table",
    "100% cotton",
    "back\\slash",
    "tab\there",
    "sneakers",
)
# IRIS codes also present in seeds/insee_iris_zones.csv (Corsican 2A/2B codes, leading zeros kept).
IRIS_CODES = (
    "751010101",
    "751010102",
    "751020301",
    "751156201",
    "691230101",
    "691230202",
    "130550101",
    "130550102",
    "2A0040101",
    "2A0040102",
    "2A0040201",
    "2A2470101",
    "2B0330101",
    "2B0330102",
    "2B0960101",
    "2B0500101",
    "060880101",
    "060880102",
    "315550101",
    "330630101",
    "593500101",
    "441090101",
    "674820101",
    "341720101",
    "352380101",
    "010530101",
)
OFFSETS_MINUTES = np.array([120, -300, 330, 60, -180, 540])
BAD_TIMESTAMPS = (
    "",
    "not-a-timestamp",
    "2026-02-30T10:00:00Z",
    "2026-11-20 25:61:00",
    "1700000000",
    "20/11/2026 10:00",
    "2026-13-01T00:00:00+01:00",
)
INVALID_EVENT_TYPES = ("purchase", "VIEW", "", "add-to-cart")
CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class DefectRates:
    """Share of rows given each defect (independently)."""

    redelivered: float = 0.015  # same ingestion_id sent again later
    redelivered_same_time: float = 0.002  # ... with the very same ingested_at (a tie)
    null_ingestion_id: float = 0.003
    null_key: float = 0.003  # order_id / user_id / item_id / event_id / session_id, each
    bad_quantity: float = 0.004
    bad_price: float = 0.006
    unknown_item: float = 0.005
    bad_timestamp: float = 0.004
    offset_timestamp: float = 0.2
    invalid_event_type: float = 0.003


@dataclass(frozen=True)
class SampleConfig:
    seed: int = 42
    users: int = 5_000
    items: int = 2_000
    orders: int = 50_000  # order lines (rows of the orders stream)
    clicks: int = 150_000
    days: int = 45
    end_date: date = date(2026, 11, 20)
    defects: DefectRates = field(default_factory=DefectRates)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.end_date - timedelta(days=self.days - 1), datetime.min.time(), UTC)


def _rng(cfg: SampleConfig, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stream, chunk])


def _pick(rng: np.random.Generator, pool: tuple[str, ...], n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, len(pool), n), pa.int32()), pa.array(pool)).cast(
        pa.string()
    )


def _null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _iso_utc(epoch_ms: np.ndarray) -> pa.Array:
    """``2026-11-20T10:00:00.123Z``."""
    ts = pa.array(epoch_ms, pa.timestamp("ms", tz="UTC"))
    return pc.binary_join_element_wise(pc.strftime(ts, "%Y-%m-%dT%H:%M:%S"), "Z", "")


def _iso_with_offsets(epoch_ms: np.ndarray, rng: np.random.Generator, share: float) -> pa.Array:
    """Event timestamps as a producer would send them: mostly ``Z``, some local time + offset,
    some without fractional seconds."""
    n = len(epoch_ms)
    with_offset = rng.random(n) < share
    offset_min = np.where(with_offset, OFFSETS_MINUTES[rng.integers(0, len(OFFSETS_MINUTES), n)], 0)
    local = pa.array(epoch_ms + offset_min * 60_000, pa.timestamp("ms", tz="UTC"))
    whole_seconds = rng.random(n) < 0.3
    text = pc.if_else(
        pa.array(whole_seconds),
        pc.strftime(pc.cast(local, pa.timestamp("s", tz="UTC"), safe=False), "%Y-%m-%dT%H:%M:%S"),
        pc.strftime(local, "%Y-%m-%dT%H:%M:%S"),
    )
    sign = np.where(offset_min < 0, "-", "+")
    hours, minutes = np.abs(offset_min) // 60, np.abs(offset_min) % 60
    suffix = np.char.add(
        np.char.add(np.char.add(sign, np.char.zfill(hours.astype(str), 2)), ":"), np.char.zfill(minutes.astype(str), 2)
    )
    suffix = np.where(with_offset, suffix, "Z")
    return pc.binary_join_element_wise(text, pa.array(suffix), "")


def _with_bad_timestamps(ts: pa.Array, rng: np.random.Generator, share: float) -> pa.Array:
    n = len(ts)
    bad = rng.random(n) < share
    bad_text = _pick(rng, BAD_TIMESTAMPS, n)
    bad_text = _null_where(bad_text, rng.random(n) < 0.25)  # a quarter of them NULL
    return pc.if_else(pa.array(bad), bad_text, ts)


def _diurnal_ms(rng: np.random.Generator, cfg: SampleConfig, n: int) -> np.ndarray:
    """Epoch ms spread over the window, busier in the evening and on weekends."""
    day = rng.integers(0, cfg.days, n)
    hour_weights = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 12, 10, 6, 3], float)
    hour = rng.choice(24, n, p=hour_weights / hour_weights.sum())
    start_ms = int(cfg.start.timestamp() * 1000)
    return start_ms + day * 86_400_000 + hour * 3_600_000 + rng.integers(0, 3_600_000, n)


# ---------------------------------------------------------------- app tables


def users_table(cfg: SampleConfig) -> pa.Table:
    """App users (SQLite). Timestamps in the three shapes the SQLite loader must handle:
    ``signup_at`` REAL epoch seconds with fractions, ``updated_at`` INTEGER epoch seconds,
    ``last_login_at`` ISO text."""
    rng = _rng(cfg, 1)
    n = cfg.users
    ids = np.arange(1, n + 1)
    end_s = datetime.combine(cfg.end_date, datetime.max.time(), UTC).timestamp()
    # most users signed up over two years, a few in the last week (the `new_user` segment)
    age_days = np.where(rng.random(n) < 0.05, rng.uniform(0, 7, n), rng.uniform(7, 730, n))
    signup = np.round(end_s - age_days * 86_400, 6)
    updated = (signup + rng.uniform(0, 1, n) * (end_s - signup)).astype(np.int64)
    last_login_ms = (updated * 1000).astype(np.int64)
    names = pc.binary_join_element_wise(_pick(rng, FIRST_NAMES, n), _pick(rng, LAST_NAMES, n), " ")
    email = pc.binary_join_element_wise(_prefixed("user", ids), "@example.com", "")
    birth_year = pa.array(rng.integers(1950, 2008, n))
    opt_in = pa.array(rng.integers(0, 2, n))
    return pa.table(
        {
            "user_id": pa.array(ids, pa.int64()),
            "email": _null_where(email, rng.random(n) < 0.01),
            "display_name": names,
            "iris_code": _null_where(_pick(rng, IRIS_CODES, n), rng.random(n) < 0.05),
            "birth_year": _null_where(birth_year, rng.random(n) < 0.1),
            "marketing_opt_in": _null_where(opt_in, rng.random(n) < 0.05),
            "signup_at": pa.array(signup, pa.float64()),
            "updated_at": pa.array(updated, pa.int64()),
            "last_login_at": _null_where(_iso_utc(last_login_ms), rng.random(n) < 0.1),
        }
    )


def items_table(cfg: SampleConfig) -> pa.Table:
    """The catalog (Postgres, schema ``catalog``)."""
    rng = _rng(cfg, 2)
    n = cfg.items
    ids = np.arange(1, n + 1)
    price = np.round(np.clip(rng.lognormal(3.2, 0.9, n), 1, 2_000), 2)
    created_ms = int(cfg.start.timestamp() * 1000) - rng.integers(0, 400 * 86_400_000, n)
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "title": pc.binary_join_element_wise(_pick(rng, ADJECTIVES, n), _pick(rng, NOUNS, n), " "),
            "category": _pick(rng, CATEGORIES, n),
            "price": pa.array(price).cast(pa.decimal128(10, 2)),
            "stock": pa.array(np.where(rng.random(n) < 0.08, 0, rng.integers(1, 500, n))),
            "is_active": pa.array(rng.random(n) > 0.04),
            "is_adult": pa.array(rng.random(n) < 0.02),
            "created_at": pa.array(created_ms, pa.timestamp("ms", tz="UTC")),
            "updated_at": pa.array(created_ms + rng.integers(0, 30 * 86_400_000, n), pa.timestamp("ms", tz="UTC")),
        }
    )


# ---------------------------------------------------------------- event streams


@dataclass(frozen=True)
class Sessions:
    """Browsing sessions: the skeleton both event streams hang on."""

    user_id: np.ndarray
    start_ms: np.ndarray
    item_id: np.ndarray  # the item the session is about
    depth: np.ndarray  # 1..4 funnel steps reached
    has_search: np.ndarray

    @property
    def count(self) -> int:
        return len(self.user_id)


def sessions(cfg: SampleConfig) -> Sessions:
    rng = _rng(cfg, 3)
    n = max(1, int(cfg.clicks / 2.75))  # 2.75 events per session on average
    # a few heavy users and popular items (Zipf-like)
    user_id = (rng.zipf(1.3, n) - 1) % cfg.users + 1
    item_id = (rng.zipf(1.2, n) * 7919) % cfg.items + 1
    depth = rng.choice([1, 2, 3, 4], n, p=[0.35, 0.3, 0.2, 0.15])
    return Sessions(user_id, _diurnal_ms(rng, cfg, n), item_id, depth, rng.random(n) < 0.6)


def _session_ids(index: np.ndarray) -> pa.Array:
    return _prefixed("s-", index)


def _ingestion(topic: str, rng: np.random.Generator, n: int, first_offset: int) -> tuple[pa.Array, np.ndarray]:
    """``topic-partition-offset`` ids; offsets grow per partition across chunks."""
    partition = rng.integers(0, 4, n)
    offset = first_offset + np.arange(n)  # unique across partitions: simple and still realistic
    ids = pc.binary_join_element_wise(
        pa.array(np.full(n, topic)),
        pc.cast(pa.array(partition), pa.string()),
        pc.cast(pa.array(offset), pa.string()),
        "-",
    )
    return ids, partition


def _redeliver(table: pa.Table, rng: np.random.Generator, rates: DefectRates) -> pa.Table:
    """Append copies of some records with the same ingestion_id, ingested later (or at the same
    instant, a tie), the way an at-least-once consumer redelivers them."""
    n = table.num_rows
    chosen = np.flatnonzero(rng.random(n) < rates.redelivered)
    if len(chosen) == 0:
        return table
    copies = table.take(pa.array(chosen))
    ingested_ms = copies.column("_ingested_ms").to_numpy()
    same_time = rng.random(len(chosen)) < rates.redelivered_same_time / max(rates.redelivered, 1e-9)
    later = ingested_ms + np.where(same_time, 0, rng.integers(1_000, 6 * 3_600_000, len(chosen)))
    copies = copies.set_column(copies.schema.get_field_index("_ingested_ms"), "_ingested_ms", pa.array(later))
    return pa.concat_tables([table, copies])


def _finish(table: pa.Table, stream: str) -> pa.Table:
    """Render ingested_at, add the landing partition ``dt`` (UTC ingestion date), keep the
    stream's bronze fields in their order."""
    ms = table.column("_ingested_ms").to_numpy()
    table = table.append_column("ingested_at", _iso_utc(ms))
    table = table.append_column("dt", pc.strftime(pa.array(ms, pa.timestamp("ms", tz="UTC")), "%Y-%m-%d"))
    return table.select([*BRONZE_FIELDS[stream], "dt"])


def clicks_chunks(cfg: SampleConfig, sess: Sessions):  # type: ignore[no-untyped-def]
    """Yield the clicks stream in chunks of at most ``CHUNK_ROWS`` records."""
    rates = cfg.defects
    steps = sess.depth + sess.has_search.astype(int)  # events per session
    total = int(steps.sum())
    scale = cfg.clicks / max(total, 1)
    offset = 0
    per_chunk = max(1, int(CHUNK_ROWS / 2.75))
    for chunk, lo in enumerate(range(0, sess.count, per_chunk)):
        rng = _rng(cfg, 4, chunk)
        hi = min(sess.count, lo + per_chunk)
        idx = np.arange(lo, hi)
        reps = steps[idx]
        s = np.repeat(idx, reps)
        position = np.arange(len(s)) - np.repeat(np.cumsum(reps) - reps, reps)
        # funnel position -> event type: sessions with a search start with it
        step = position + (~sess.has_search[s]).astype(int)
        event_type = pa.array(np.array(EVENT_TYPES)[np.minimum(step, 3)])
        if scale < 1:  # keep the requested size when sessions produce more events
            keep = rng.random(len(s)) < scale
            s, position, event_type = s[keep], position[keep], event_type.filter(pa.array(keep))
        n = len(s)
        event_ms = sess.start_ms[s] + position * rng.integers(2_000, 90_000, n)
        is_search = pc.equal(event_type, "search")
        item = pa.array(np.where(rng.random(n) < 0.15, rng.integers(1, cfg.items + 1, n), sess.item_id[s]))
        item = pc.if_else(is_search, pa.scalar(None, pa.int64()), item)
        query = pc.if_else(is_search, _pick(rng, SEARCH_QUERIES, n), pa.scalar(None, pa.string()))
        ingestion_id, _ = _ingestion("clicks", rng, n, offset)
        offset += n
        bad_type = rng.random(n) < rates.invalid_event_type
        event_type = pc.if_else(
            pa.array(bad_type), _null_where(_pick(rng, INVALID_EVENT_TYPES, n), rng.random(n) < 0.2), event_type
        )
        table = pa.table(
            {
                "ingestion_id": _null_where(ingestion_id, rng.random(n) < rates.null_ingestion_id),
                "event_id": _null_where(_prefixed("e-", (chunk << 40) + np.arange(n)), rng.random(n) < rates.null_key),
                "session_id": _null_where(_session_ids(s), rng.random(n) < rates.null_key),
                "user_id": _null_where(pa.array(sess.user_id[s]), rng.random(n) < rates.null_key),
                "item_id": _null_where(
                    item, (rng.random(n) < rates.null_key) & ~is_search.to_numpy(zero_copy_only=False)
                ),
                "event_type": event_type,
                "query": query,
                "event_ts": _with_bad_timestamps(
                    _iso_with_offsets(event_ms, rng, rates.offset_timestamp), rng, rates.bad_timestamp
                ),
                "_ingested_ms": event_ms + rng.integers(500, 180_000, n),
            }
        )
        yield _finish(_redeliver(table, rng, rates), "clicks")


def orders_chunks(cfg: SampleConfig, sess: Sessions):  # type: ignore[no-untyped-def]
    """Yield the orders stream (one record per order line) in chunks."""
    rates = cfg.defects
    produced, chunk, offset = 0, 0, 0
    while produced < cfg.orders:
        rng = _rng(cfg, 5, chunk)
        n = min(CHUNK_ROWS, cfg.orders - produced)
        # order headers with 1-3 lines each, cut to exactly n lines
        lines_per_order = rng.choice([1, 2, 3], n, p=[0.6, 0.28, 0.12])
        order_of_line = np.repeat(np.arange(n), lines_per_order)[:n]
        line_no = np.arange(n) - np.searchsorted(order_of_line, order_of_line)
        session_of_order = rng.integers(0, sess.count, n)
        s = session_of_order[order_of_line]
        order_ms = sess.start_ms[s] + rng.integers(60_000, 1_800_000, n)[order_of_line]
        item = np.where(line_no == 0, sess.item_id[s], rng.integers(1, cfg.items + 1, n))
        unknown = rng.random(n) < rates.unknown_item
        item = np.where(unknown, cfg.items + rng.integers(1, 1_000, n), item)
        quantity = rng.geometric(0.6, n)
        bad_q = rng.random(n) < rates.bad_quantity
        quantity = pa.array(np.where(bad_q, rng.choice([0, -1, -3], n), quantity))
        quantity = _null_where(quantity, bad_q & (rng.random(n) < 0.3))
        cents = np.round(np.clip(rng.lognormal(3.2, 0.9, n), 1, 2_000), 2)
        bad_p = rng.random(n) < rates.bad_price
        cents = np.where(bad_p, rng.choice([0.0, -9.99, 10_000.0, 12_345.67], n), cents)
        price = _null_where(pa.array(cents).cast(pa.decimal128(12, 2)), bad_p & (rng.random(n) < 0.2))
        ingestion_id, _ = _ingestion("orders", rng, n, offset)
        offset += n
        global_order = produced + order_of_line
        table = pa.table(
            {
                "ingestion_id": _null_where(ingestion_id, rng.random(n) < rates.null_ingestion_id),
                "order_id": _null_where(_prefixed("o-", global_order + 1), rng.random(n) < rates.null_key),
                "user_id": _null_where(pa.array(sess.user_id[s]), rng.random(n) < rates.null_key),
                "item_id": _null_where(pa.array(item), rng.random(n) < rates.null_key),
                "session_id": _session_ids(s),
                "quantity": quantity,
                "unit_price": price,
                "currency": pa.array(np.full(n, "EUR")),
                "event_ts": _with_bad_timestamps(
                    _iso_with_offsets(order_ms, rng, rates.offset_timestamp), rng, rates.bad_timestamp
                ),
                "_ingested_ms": order_ms + rng.integers(500, 600_000, n),
            }
        )
        yield _finish(_redeliver(table, rng, rates), "orders")
        produced += n
        chunk += 1
