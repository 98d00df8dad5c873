"""The in-memory vector index and its checkpoint file, `index.faiss`.

`FlatIndex` keeps one row per live document in a growable float32 matrix and
answers exact k-nearest-neighbour queries with FAISS's brute-force kernels.
Adding a row is amortised O(1); removing one moves the last row into its
place (O(dimension)), so no single write rewrites the index.

A checkpoint is a plain FAISS file (`IndexIDMap2` over `IndexFlatIP` or
`IndexFlatL2`, readable with `faiss.read_index`) followed by a fixed-size
trailer: magic, format version, store id, the change sequence it contains,
row count, dimension, metric, the byte offsets of the vector and label blocks,
the payload length and a CRC-32. It is written to a temporary file, fsynced,
and renamed over the old one. Loading maps the file copy-on-write, so a large
index opens without copying its vectors.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import uuid
import zlib
from typing import TYPE_CHECKING, Any, Literal

import faiss
import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
    Labels = npt.NDArray[np.int64]

Metric = Literal["ip", "l2"]

_FAISS_METRIC = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
_METRIC_CODE = {"ip": 0, "l2": 1}
_MAGIC = b"LPMIDX\x00\x01"
_VERSION = 1
# magic, version, store id, seq, count, dim, metric, vec_off, lab_off, payload
# length, then a CRC-32 of the payload followed by all the fields before it.
_FIELDS = struct.Struct("<8sI16sqqIIqqq")
_CRC = struct.Struct("<I")
_TRAILER_SIZE = _FIELDS.size + _CRC.size
# Below this share of rows, a filtered search scores only the matching rows.
_GATHER_SHARE = 0.5
# The approximate index is used from this many rows on; below, exact is fast.
IVF_MIN_ROWS = 20_000


class FlatIndex:
    """Exact vector index over a growable matrix, keyed by int64 labels."""

    def __init__(self, dim: int, metric: Metric, nprobe: int | None = None) -> None:
        """Create an empty index of `dim`-dimensional vectors.

        With `nprobe`, unfiltered searches on `IVF_MIN_ROWS` rows or more go
        through an inverted-file index (`IndexIVFFlat`) that visits `nprobe`
        of its lists: approximate, much faster on large stores. Filtered
        searches stay exact.
        """
        self.dim = dim
        self.metric: Metric = metric
        self.nprobe = nprobe
        self._vectors: Vectors = np.empty((0, dim), dtype=np.float32)
        self._labels: Labels = np.empty(0, dtype=np.int64)
        self._pos: Labels = np.empty(0, dtype=np.int64)  # label -> row, -1 if absent
        self._n = 0
        self._ivf: Any = None
        self._ivf_quantizer: Any = None  # kept alive for the IVF index
        self._ivf_rows = 0  # rows when the IVF index was trained

    def __len__(self) -> int:
        """Number of vectors in the index."""
        return self._n

    @classmethod
    def from_arrays(
        cls,
        labels: Labels,
        vectors: Vectors,
        metric: Metric,
        nprobe: int | None = None,
    ) -> FlatIndex:
        """Wrap existing arrays (not copied; `vectors` must be writable)."""
        index = cls(vectors.shape[1], metric, nprobe)
        index._vectors = vectors
        index._labels = labels
        index._n = len(labels)
        index._set_positions(labels, np.arange(len(labels), dtype=np.int64))
        return index

    def has_unique_labels(self) -> bool:
        """Whether no label appears on two rows (each maps back to its row)."""
        rows = self._pos[self.labels()]
        return bool(np.array_equal(rows, np.arange(self._n)))

    def labels(self) -> Labels:
        """Labels of the live rows (a view)."""
        return self._labels[: self._n]

    def vectors(self) -> Vectors:
        """Vectors of the live rows (a view)."""
        return self._vectors[: self._n]

    def vectors_of(self, labels: Labels) -> Vectors:
        """Vectors of the given labels (which must be present), in order."""
        return self._vectors[self._pos[labels]]

    def _set_positions(self, labels: Labels, rows: Labels) -> None:
        if len(labels) == 0:
            return
        top = int(labels.max()) + 1
        if top > len(self._pos):
            grown = np.full(max(top, 2 * len(self._pos)), -1, dtype=np.int64)
            grown[: len(self._pos)] = self._pos
            self._pos = grown
        self._pos[labels] = rows

    def _rows_of(self, labels: Labels) -> Labels:
        labels = labels[(labels >= 0) & (labels < len(self._pos))]
        rows = self._pos[labels]
        return rows[rows >= 0]

    def add(self, labels: Labels, vectors: Vectors) -> None:
        """Append rows; the labels must not be present already."""
        count = len(labels)
        if count == 0:
            return
        need = self._n + count
        if need > len(self._vectors):
            capacity = max(need, int(len(self._vectors) * 1.5) + 16)
            grown_vectors = np.empty((capacity, self.dim), dtype=np.float32)
            grown_vectors[: self._n] = self._vectors[: self._n]
            grown_labels = np.empty(capacity, dtype=np.int64)
            grown_labels[: self._n] = self._labels[: self._n]
            self._vectors, self._labels = grown_vectors, grown_labels
        rows = np.arange(self._n, need, dtype=np.int64)
        self._vectors[self._n : need] = vectors
        self._labels[self._n : need] = labels
        self._set_positions(labels, rows)
        self._n = need
        if self._ivf is not None:
            self._ivf.add_with_ids(self._vectors[rows], labels)

    def remove(self, labels: Labels) -> None:
        """Remove the rows of these labels; absent or repeated labels are fine."""
        rows = np.unique(self._rows_of(labels))
        if self._ivf is not None and len(rows):
            gone = np.ascontiguousarray(self._labels[rows])
            self._ivf.remove_ids(faiss.IDSelectorArray(len(gone), faiss.swig_ptr(gone)))
        for row in rows[::-1]:
            gone = self._labels[row]
            last = self._n - 1
            if row != last:
                moved = self._labels[last]
                self._vectors[row] = self._vectors[last]
                self._labels[row] = moved
                self._pos[moved] = row
            self._pos[gone] = -1
            self._n = last

    def search(
        self, query: Vectors, k: int, subset: Labels | None = None
    ) -> tuple[npt.NDArray[np.float32], Labels]:
        """Return the `k` best `(scores, labels)`, best first.

        Scores are inner products for `ip` and Euclidean distances for `l2`.
        With `subset`, only those labels are ranked (exactly).
        """
        empty = (np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64))
        if self._n == 0 or k <= 0:
            return empty
        if subset is None and self._use_ivf():
            distances, found = self._ivf.search(query.reshape(1, -1), min(k, self._n))
            keep = found[0] >= 0
            scores, picked = distances[0][keep], self._pos[found[0][keep]]
        elif subset is None:
            distances, rows = faiss.knn(
                query.reshape(1, -1),
                self._vectors[: self._n],
                min(k, self._n),
                metric=_FAISS_METRIC[self.metric],
            )
            scores, picked = distances[0], rows[0]
            keep = picked >= 0
            scores, picked = scores[keep], picked[keep]
        else:
            candidates = self._rows_of(subset)
            if len(candidates) == 0:
                return empty
            if len(candidates) < _GATHER_SHARE * self._n:
                all_scores = self._score(self._vectors[candidates], query)
            else:
                all_scores = self._score(self._vectors[: self._n], query)[candidates]
            order = all_scores if self.metric == "l2" else -all_scores
            k = min(k, len(candidates))
            if k < len(order):
                best = np.argpartition(order, k - 1)[:k]
            else:
                best = np.arange(len(order))
            best = best[np.argsort(order[best], kind="stable")]
            scores, picked = all_scores[best], candidates[best]
        if self.metric == "l2":
            scores = np.sqrt(np.maximum(scores, 0.0))
        return scores.astype(np.float32), self._labels[picked]

    def _use_ivf(self) -> bool:
        """Whether to search approximately; (re)builds the IVF index if due."""
        nprobe = self.nprobe
        if nprobe is None or self._n < IVF_MIN_ROWS:
            self._ivf = None
            return False
        if self._ivf is None or not (
            self._ivf_rows / 2 <= self._n <= 4 * self._ivf_rows
        ):
            self._build_ivf(nprobe)
        return True

    def _build_ivf(self, nprobe: int) -> None:
        """Train an `IndexIVFFlat` on a sample of the rows and add all rows."""
        nlist = max(16, min(4096, int(np.sqrt(self._n))))
        faiss_metric = _FAISS_METRIC[self.metric]
        quantizer = faiss.IndexFlat(self.dim, faiss_metric)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss_metric)
        rng = np.random.default_rng(0)
        sample = rng.choice(self._n, size=min(self._n, 40 * nlist), replace=False)
        ivf.train(self._vectors[np.sort(sample)])
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        ivf.add_with_ids(self._vectors[: self._n], self._labels[: self._n])
        ivf.nprobe = nprobe
        self._ivf, self._ivf_quantizer, self._ivf_rows = ivf, quantizer, self._n

    def _score(self, vectors: Vectors, query: Vectors) -> npt.NDArray[np.float32]:
        if self.metric == "ip":
            return vectors @ query
        diff = vectors - query
        squared: npt.NDArray[np.float32] = np.einsum("ij,ij->i", diff, diff)
        return squared


def checkpoint_index(labels: Labels, vectors: Vectors, metric: Metric) -> Any:
    """Copy rows into the FAISS index a checkpoint is made of (`IndexIDMap2`)."""
    dim = vectors.shape[1]
    flat = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    idmap = faiss.IndexIDMap2(flat)
    if len(labels):
        idmap.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(labels, dtype=np.int64),
        )
    return idmap


def write_checkpoint(path: Path, idmap: Any, *, store_id: bytes, seq: int) -> Path:
    """Write a checkpoint to a temporary file beside `path`, fsynced; return it.

    `idmap` comes from `checkpoint_index`. FAISS streams it to the temporary
    file; the trailer is computed from what was written and appended.
    `publish_checkpoint` then renames it over `path`; a temporary file that
    is never published is the caller's to delete.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        faiss.write_index(idmap, str(tmp))  # keeps the file's 0600 mode
        with tmp.open("r+b") as handle:
            payload_len = os.fstat(handle.fileno()).st_size
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                crc = zlib.crc32(data)
                vec_off, lab_off = _locate_blocks(data, idmap)
            metric = "l2" if idmap.metric_type == faiss.METRIC_L2 else "ip"
            fields = _FIELDS.pack(
                _MAGIC,
                _VERSION,
                store_id,
                seq,
                idmap.ntotal,
                idmap.d,
                _METRIC_CODE[metric],
                vec_off,
                lab_off,
                payload_len,
            )
            handle.seek(0, os.SEEK_END)
            handle.write(fields + _CRC.pack(zlib.crc32(fields, crc)))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def publish_checkpoint(tmp: Path, path: Path) -> None:
    """Rename a written checkpoint over `path` (atomic), then fsync the directory."""
    tmp.replace(path)
    _fsync_directory(path.parent)


def remove_stale_temp_files(path: Path) -> int:
    """Delete temporary checkpoints left by processes that died while writing.

    Their names carry the writer's process id; files of live processes
    (which may be writing right now) are left alone. Returns how many went.
    """
    removed = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[3])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _locate_blocks(data: mmap.mmap, idmap: Any) -> tuple[int, int]:
    """Byte offsets of the raw vector and label blocks inside the FAISS file.

    FAISS writes an `IndexIDMap2` as its header, the flat index (whose last
    field is the raw vectors) and then the id map (a length and raw int64s).
    The offsets are checked on sample rows; if FAISS ever lays the file out
    differently, -1 is recorded and readers fall back to `faiss.read_index`.
    """
    count, dim = idmap.ntotal, idmap.d
    lab_off = len(data) - 8 * count
    vec_off = lab_off - 8 - 4 * dim * count
    if vec_off < 0:
        return -1, -1
    if count == 0:
        return vec_off, lab_off
    flat: Any = faiss.downcast_index(idmap.index)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), count * dim).reshape(count, dim)
    labels = faiss.vector_to_array(idmap.id_map)
    for row in {0, count // 2, count - 1}:
        start = vec_off + 4 * dim * row
        same_vector = data[start : start + 4 * dim] == vectors[row].tobytes()
        label_at = lab_off + 8 * row
        same_label = data[label_at : label_at + 8] == labels[row : row + 1].tobytes()
        if not (same_vector and same_label):
            return -1, -1
    return vec_off, lab_off


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class CheckpointError(Exception):
    """The checkpoint cannot be used; the message says why."""


def read_checkpoint(
    path: Path,
    *,
    store_id: bytes,
    dim: int,
    metric: Metric,
    max_label: int,
    nprobe: int | None = None,
) -> tuple[int, FlatIndex]:
    """Load a checkpoint; return `(seq, index)`.

    `max_label` is the largest label the database ever gave a document.

    Raises:
        CheckpointError: If the file is missing, truncated, damaged, from
            another store, or made for another dimension or metric.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError as exc:
        msg = "it does not exist"
        raise CheckpointError(msg) from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size < _TRAILER_SIZE:
            msg = f"it is truncated ({size} bytes)"
            raise CheckpointError(msg)
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    payload_len = size - _TRAILER_SIZE
    raw_fields = bytes(buffer[payload_len : payload_len + _FIELDS.size])
    fields = _FIELDS.unpack(raw_fields)
    (crc,) = _CRC.unpack_from(buffer, payload_len + _FIELDS.size)
    if fields[0] != _MAGIC or fields[1] != _VERSION:
        msg = "it is not a checkpoint of this package (truncated or foreign)"
        raise CheckpointError(msg)
    with memoryview(buffer) as view:
        if zlib.crc32(raw_fields, zlib.crc32(view[:payload_len])) != crc:
            msg = "its checksum does not match (damaged)"
            raise CheckpointError(msg)
    _, _, file_store, seq, count, file_dim, metric_code = fields[:7]
    vec_off, lab_off, recorded_len = fields[7:]
    if file_store != store_id:
        msg = "it belongs to another store"
        raise CheckpointError(msg)
    if file_dim != dim or metric_code != _METRIC_CODE[metric]:
        msg = "it was made for another dimension or metric"
        raise CheckpointError(msg)
    if recorded_len != payload_len or count < 0:
        msg = "its length does not match its trailer"
        raise CheckpointError(msg)
    blocks_fit = (
        vec_off >= 0
        and vec_off + 4 * dim * count + 8 == lab_off
        and lab_off + 8 * count == payload_len
    )
    if blocks_fit:
        vectors = np.ndarray(
            (count, dim), dtype=np.float32, buffer=buffer, offset=vec_off
        )
        labels = np.frombuffer(
            buffer, dtype=np.int64, count=count, offset=lab_off
        ).copy()
    else:
        labels, vectors = _read_with_faiss(path, count, dim)
    return seq, _checked_index(labels, vectors, metric, max_label, nprobe)


def _checked_index(
    labels: Labels,
    vectors: Vectors,
    metric: Metric,
    max_label: int,
    nprobe: int | None,
) -> FlatIndex:
    """Wrap a checkpoint's arrays, refusing labels the database cannot have."""
    if len(labels) and (labels.min() < 1 or labels.max() > max_label):
        msg = "it holds labels no document can have"
        raise CheckpointError(msg)
    index = FlatIndex.from_arrays(labels, vectors, metric, nprobe)
    if not index.has_unique_labels():
        msg = "it holds the same label twice"
        raise CheckpointError(msg)
    return index


def _read_with_faiss(path: Path, count: int, dim: int) -> tuple[Labels, Vectors]:
    try:
        idmap: Any = faiss.downcast_index(faiss.read_index(str(path)))
    except RuntimeError as exc:
        msg = f"FAISS cannot read it ({exc})"
        raise CheckpointError(msg) from exc
    flat: Any = (
        faiss.downcast_index(idmap.index)
        if isinstance(idmap, faiss.IndexIDMap2)
        else None
    )
    if not isinstance(flat, faiss.IndexFlat):
        msg = "its FAISS index is not the kind this package writes"
        raise CheckpointError(msg)
    if idmap.ntotal != count or idmap.d != dim:
        msg = "its FAISS index does not match its trailer"
        raise CheckpointError(msg)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), count * dim).reshape(count, dim).copy()
    labels = faiss.vector_to_array(idmap.id_map).astype(np.int64)
    return labels, vectors


def checkpoint_stamp(path: Path) -> int | None:
    """The change sequence stamped on the checkpoint at `path`, if readable."""
    try:
        with path.open("rb") as handle:
            handle.seek(-_TRAILER_SIZE, os.SEEK_END)
            fields = _FIELDS.unpack(handle.read(_FIELDS.size))
    except (OSError, struct.error):
        return None
    return int(fields[3]) if fields[0] == _MAGIC else None
