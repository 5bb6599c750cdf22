"""Arrow columns -> serialized proto2 rows, a column at a time (numpy and Arrow kernels), with
the bytes protobuf itself writes: each set field as its tag then its value, in field-number
order; a NULL is a field left out. Building one message object per row cost ~6 µs a row.

Wire formats (https://protobuf.dev/programming-guides/encoding/): int64, int32 (negative ones
sign-extended to ten bytes) and bool are varints, double is eight little-endian bytes, string
and bytes are a varint length then the bytes. ``encode`` returns None for a column type it does
not write (civil DATETIME and TIME text): the caller builds messages then.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_VARINT, _FIXED64, _LENGTH = 0, 1, 2
_MAX_VARINT = 10


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each int64 as a varint of its two's complement: a (n, 10) byte matrix and the lengths."""
    unsigned = values.astype(np.int64).view(np.uint64)
    lengths = np.ones(len(unsigned), np.int64)
    for k in range(1, _MAX_VARINT):
        lengths += unsigned >= np.uint64(1) << np.uint64(7 * k)
    matrix = np.empty((len(unsigned), _MAX_VARINT), np.uint8)
    for k in range(_MAX_VARINT):
        group = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, k] = np.where(k < lengths - 1, group | 0x80, group)
    return matrix, lengths


def _tag(number: int, wire: int) -> np.ndarray:
    matrix, lengths = _varints(np.array([(number << 3) | wire], np.int64))
    return matrix[0, : lengths[0]]


def _cells(head: np.ndarray, lengths: np.ndarray, present: np.ndarray) -> pa.Array:
    """Binary cells from a byte matrix whose first ``lengths`` bytes of each row are the cell;
    absent cells are empty (a field left out)."""
    lengths = np.where(present, lengths, 0)
    keep = np.arange(head.shape[1])[None, :] < lengths[:, None]
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = head[keep]  # row-major: each cell's bytes in order
    return pa.Array.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _with_tag(tag: np.ndarray, body: np.ndarray, lengths: np.ndarray, present: np.ndarray) -> pa.Array:
    head = np.concatenate([np.broadcast_to(tag, (len(body), len(tag))), body], axis=1)
    return _cells(head, lengths + len(tag), present)


def _column(number: int, column: pa.Array) -> pa.Array | None:
    type_ = column.type
    present = column.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(type_):
        if type_.tz is None:
            return None  # DATETIME: civil time as text, Python's isoformat
        column = column.cast(pa.timestamp("us", tz=type_.tz)).cast(pa.int64())
        type_ = pa.int64()
    if pa.types.is_date(type_):
        column = column.cast(pa.date32()).cast(pa.int32())
        type_ = pa.int32()
    if pa.types.is_boolean(type_):
        column, type_ = column.cast(pa.int64()), pa.int64()
    if pa.types.is_signed_integer(type_):
        body, lengths = _varints(column.fill_null(0).to_numpy(zero_copy_only=False))
        return _with_tag(_tag(number, _VARINT), body, lengths, present)
    if pa.types.is_floating(type_):
        doubles = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False).astype("<f8")
        body = doubles.view(np.uint8).reshape(-1, 8)
        return _with_tag(_tag(number, _FIXED64), body, np.full(len(doubles), 8, np.int64), present)
    if pa.types.is_decimal(type_):
        column, type_ = pc.cast(column, pa.string()), pa.string()
    if pa.types.is_string(type_) or pa.types.is_binary(type_):
        data = column.cast(pa.binary()).fill_null(b"")
        body, lengths = _varints(pc.binary_length(data).to_numpy(zero_copy_only=False))
        prefix = _with_tag(_tag(number, _LENGTH), body, lengths, present)
        return pc.binary_join_element_wise(prefix, data, b"")
    return None


SLICE_ROWS = 100_000  # the cells of a slice stay far under Arrow's 2 GiB per binary array


def encode(batch: pa.Table) -> list[bytes] | None:
    """Every row of ``batch`` serialized (field numbers 1, 2, ... in column order), or None when
    a column's type is not one written here."""
    if batch.num_rows > SLICE_ROWS:
        rows: list[bytes] = []
        for start in range(0, batch.num_rows, SLICE_ROWS):
            part = encode(batch.slice(start, SLICE_ROWS))
            if part is None:
                return None
            rows += part
        return rows
    if batch.num_rows == 0:
        return []
    cells = []
    for number, column in enumerate(batch.columns, start=1):
        cell = _column(number, column.combine_chunks())
        if cell is None:
            return None
        cells.append(cell)
    if not cells:
        return [b""] * batch.num_rows
    return pc.binary_join_element_wise(*cells, b"").to_pylist()  # type: ignore[no-any-return]
