"""Parquet files of one schema concatenated byte for byte into one file.

A sharded asset's week is its shards' parts in key order. Decoding every part's row groups and
encoding them again (pyarrow's row-group copy) is one core's work for a minute at full scale
(150.9M candidates); the pages themselves need no change. A Parquet file is ``PAR1``, its column
chunks (pages, bloom filters, page indexes), its footer (a Thrift ``FileMetaData``, compact
protocol), the footer's length and ``PAR1``. The parts' bodies are copied as they are, one after
another, and one footer lists every part's row groups with their file offsets moved by where the
part's body now starts.

The footer is read and written by a small generic reader of Thrift's compact protocol: every
field is kept as it was read (its id, type and value, in order), so writing a footer read here
gives its bytes back (tested on DuckDB's and pyarrow's files); only the offsets below change.
Parts whose schemas, key-value metadata or column orders differ, or that use what this does not
move (encryption, column data in other files), are refused: the caller copies row groups instead.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"PAR1"

# Thrift compact protocol type codes.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
_INTEGERS = (I16, I32, I64)

# Field ids of parquet.thrift (apache/parquet-format) that hold absolute file offsets, and those
# read or changed here.
FILE_SCHEMA_FIELDS = (1, 2, 5, 7)  # version, schema, key_value_metadata, column_orders: equal in every part
FILE_NUM_ROWS, FILE_ROW_GROUPS, FILE_CREATED_BY = 3, 4, 6
FILE_KNOWN = {*FILE_SCHEMA_FIELDS, FILE_NUM_ROWS, FILE_ROW_GROUPS, FILE_CREATED_BY}
ROW_GROUP_COLUMNS, ROW_GROUP_FILE_OFFSET, ROW_GROUP_ORDINAL = 1, 5, 7
ROW_GROUP_KNOWN = {1, 2, 3, 4, 5, 6, 7}
CHUNK_FILE_PATH, CHUNK_META_DATA = 1, 3
CHUNK_OFFSETS = (2, 4, 6)  # file_offset, offset_index_offset, column_index_offset
CHUNK_KNOWN = {1, 2, 3, 4, 5, 6, 7}  # 8, 9: encryption
META_OFFSETS = (9, 10, 11, 14)  # data_page_offset, index_page_offset, dictionary_page_offset, bloom_filter_offset
META_KNOWN = set(range(1, 18))


@dataclass
class ThriftStruct:
    """A Thrift struct as read: (field id, compact type, value) in the order written."""

    fields: list[tuple[int, int, Any]]

    def get(self, field_id: int) -> Any:
        return next((value for fid, _, value in self.fields if fid == field_id), None)

    def ids(self) -> set[int]:
        return {fid for fid, _, _ in self.fields}

    def set(self, field_id: int, value: Any) -> None:
        self.fields = [(fid, kind, value if fid == field_id else old) for fid, kind, old in self.fields]


@dataclass
class ThriftList:
    """A list or set: its element type and the elements (booleans as their raw byte)."""

    kind: int
    element: int
    items: list[Any]


@dataclass
class ThriftMap:
    key: int
    value: int
    items: list[tuple[Any, Any]]


class UnsupportedParquet(ValueError):
    """A part this concatenation cannot move as bytes."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise UnsupportedParquet("the footer ends inside a value")
        value = self.data[self.pos: self.pos + n]
        self.pos += n
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):  # a boolean element of a list: one byte
            return self.byte()
        if kind == BYTE:
            return self.byte()
        if kind in _INTEGERS:
            return self.zigzag()
        if kind == DOUBLE:
            return self.take(8)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            header = self.byte()
            size = header >> 4
            if size == 15:
                size = self.varint()
            element = header & 0x0F
            return ThriftList(kind, element, [self.value(element) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if size == 0:
                return ThriftMap(0, 0, [])
            types = self.byte()
            key, value = types >> 4, types & 0x0F
            return ThriftMap(key, value, [(self.value(key), self.value(value)) for _ in range(size)])
        if kind == STRUCT:
            return self.struct()
        raise UnsupportedParquet(f"unknown Thrift compact type {kind}")

    def struct(self) -> ThriftStruct:
        fields, last = [], 0
        while True:
            header = self.byte()
            if header == STOP:
                return ThriftStruct(fields)
            kind, delta = header & 0x0F, header >> 4
            field_id = last + delta if delta else self.zigzag()
            fields.append((field_id, kind, None if kind in (TRUE, FALSE) else self.value(kind)))
            last = field_id


class _Writer:
    def __init__(self) -> None:
        self.out = io.BytesIO()

    def varint(self, n: int) -> None:
        while True:
            if n < 0x80:
                self.out.write(bytes((n,)))
                return
            self.out.write(bytes(((n & 0x7F) | 0x80,)))
            n >>= 7

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, kind: int, value: Any) -> None:
        if kind in (TRUE, FALSE, BYTE):
            self.out.write(bytes((value,)))
        elif kind in _INTEGERS:
            self.zigzag(value)
        elif kind == DOUBLE:
            self.out.write(value)
        elif kind == BINARY:
            self.varint(len(value))
            self.out.write(value)
        elif kind in (LIST, SET):
            size = len(value.items)
            if size < 15:
                self.out.write(bytes(((size << 4) | value.element,)))
            else:
                self.out.write(bytes((0xF0 | value.element,)))
                self.varint(size)
            for item in value.items:
                self.value(value.element, item)
        elif kind == MAP:
            self.varint(len(value.items))
            if value.items:
                self.out.write(bytes(((value.key << 4) | value.value,)))
                for k, v in value.items:
                    self.value(value.key, k)
                    self.value(value.value, v)
        elif kind == STRUCT:
            self.struct(value)
        else:
            raise UnsupportedParquet(f"unknown Thrift compact type {kind}")

    def struct(self, value: ThriftStruct) -> None:
        last = 0
        for field_id, kind, field in value.fields:
            delta = field_id - last
            if 0 < delta <= 15:
                self.out.write(bytes(((delta << 4) | kind,)))
            else:
                self.out.write(bytes((kind,)))
                self.zigzag(field_id)
            if kind not in (TRUE, FALSE):
                self.value(kind, field)
            last = field_id
        self.out.write(bytes((STOP,)))


def read_thrift(data: bytes) -> ThriftStruct:
    reader = _Reader(data)
    try:
        value = reader.struct()
    except IndexError:
        raise UnsupportedParquet("the footer ends inside a value") from None
    if reader.pos != len(data):
        raise UnsupportedParquet(f"{len(data) - reader.pos} bytes follow the footer's struct")
    return value


def write_thrift(value: ThriftStruct) -> bytes:
    writer = _Writer()
    writer.struct(value)
    return writer.out.getvalue()


@dataclass
class _Part:
    path: Path
    body_end: int  # where the footer starts; the body is [4, body_end)
    footer: ThriftStruct


def read_footer(path: Path) -> tuple[int, ThriftStruct]:
    """Where ``path``'s footer starts, and the footer."""
    size = path.stat().st_size
    if size < 12:
        raise UnsupportedParquet(f"{path} is not a plain Parquet file")
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(size - 8)
        tail = handle.read(8)
        length = struct.unpack("<I", tail[:4])[0]
        if head != MAGIC or tail[4:] != MAGIC or length + 12 > size:
            raise UnsupportedParquet(f"{path} is not a plain Parquet file")
        handle.seek(size - 8 - length)
        return size - 8 - length, read_thrift(handle.read(length))


def _schema_bytes(footer: ThriftStruct) -> list[bytes]:
    return [write_thrift(ThriftStruct([f for f in footer.fields if f[0] == fid])) for fid in FILE_SCHEMA_FIELDS]


def _move(value: ThriftStruct, field_ids: Sequence[int], shift: int) -> None:
    """Offsets moved by ``shift``; 0, which some writers (DuckDB) leave in the deprecated
    ``ColumnChunk.file_offset``, is no offset (the magic bytes are there) and stays."""
    for field_id in field_ids:
        if offset := value.get(field_id):
            value.set(field_id, offset + shift)


def _moved_row_group(group: ThriftStruct, shift: int, ordinal: int, path: Path) -> ThriftStruct:
    if not group.ids() <= ROW_GROUP_KNOWN:
        raise UnsupportedParquet(f"{path}: a row group has fields {sorted(group.ids() - ROW_GROUP_KNOWN)}")
    for chunk in group.get(ROW_GROUP_COLUMNS).items:
        if not chunk.ids() <= CHUNK_KNOWN or chunk.get(CHUNK_FILE_PATH) is not None:
            raise UnsupportedParquet(f"{path}: a column chunk is encrypted or in another file")
        meta = chunk.get(CHUNK_META_DATA)
        if meta is None or not meta.ids() <= META_KNOWN:
            raise UnsupportedParquet(f"{path}: a column chunk's metadata has fields this does not know")
        _move(chunk, CHUNK_OFFSETS, shift)
        _move(meta, META_OFFSETS, shift)
    _move(group, (ROW_GROUP_FILE_OFFSET,), shift)
    if group.get(ROW_GROUP_ORDINAL) is not None:
        if ordinal >= 2**15:
            raise UnsupportedParquet("more row groups than a row group's ordinal can number")
        group.set(ROW_GROUP_ORDINAL, ordinal)
    return group


def concatenate_parquet(parts: Sequence[Path], out: BinaryIO) -> int:
    """Write ``parts``' row groups, in order and byte for byte, as one Parquet file to ``out``;
    returns its row count. Raises ``UnsupportedParquet`` (before writing anything) when the parts
    differ in schema, key-value metadata or column orders, or use encryption or external columns."""
    if not parts:
        raise ValueError("no parts to concatenate")
    read = [_Part(path, *read_footer(path)) for path in parts]
    first = read[0].footer
    expected = _schema_bytes(first)
    for part in read:
        if not part.footer.ids() <= FILE_KNOWN:
            raise UnsupportedParquet(f"{part.path}: the footer has fields {sorted(part.footer.ids() - FILE_KNOWN)}")
        if _schema_bytes(part.footer) != expected:
            raise UnsupportedParquet(f"{part.path}: its schema or metadata differ from {read[0].path}'s")
    groups: list[ThriftStruct] = []
    position, rows = len(MAGIC), 0
    for part in read:
        shift = position - len(MAGIC)
        part_groups = part.footer.get(FILE_ROW_GROUPS)
        for group in part_groups.items if part_groups is not None else []:
            groups.append(_moved_row_group(group, shift, len(groups), part.path))
        rows += part.footer.get(FILE_NUM_ROWS)
        position += part.body_end - len(MAGIC)
    footer = ThriftStruct([
        (fid, kind, rows if fid == FILE_NUM_ROWS else value) for fid, kind, value in first.fields if fid != FILE_ROW_GROUPS
    ])
    # row_groups (4) in its place among the fields, which keep ascending ids
    row_groups = (FILE_ROW_GROUPS, LIST, ThriftList(LIST, STRUCT, groups))
    footer.fields = sorted([*footer.fields, row_groups], key=lambda f: f[0])
    encoded = write_thrift(footer)
    out.write(MAGIC)
    for part in read:
        with part.path.open("rb") as handle:
            handle.seek(len(MAGIC))
            _copy_range(handle, out, part.body_end - len(MAGIC))
    out.write(encoded)
    out.write(struct.pack("<I", len(encoded)))
    out.write(MAGIC)
    return rows


def _copy_range(source: BinaryIO, out: BinaryIO, length: int, block: int = 16 << 20) -> None:
    while length > 0:
        chunk = source.read(min(block, length))
        if not chunk:
            raise UnsupportedParquet("a part ended early")
        out.write(chunk)
        length -= len(chunk)

