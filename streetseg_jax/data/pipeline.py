"""grain input pipelines: infinite shuffled, augmented train batches and one exact pass for evaluation.

A source is any random-access sequence (`len`, `__getitem__`) of records
`{"image": uint8 (H, W, 3), "segmentation_mask": uint8 (H, W, 1) or (H, W), "file_name": ...}`,
such as what `tfds.data_source` returns.

Both pipelines yield LOCAL batches: with P processes and a global batch of B, process p gets rows
[p*b, (p+1)*b) of every global batch, b = B // P, and reads only the records behind those rows. The
global batches themselves never depend on P, so a run gives the same batches (and the same model) on
one host or many, and a checkpoint taken with P processes resumes with any other P.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

import grain
import numpy as np

from streetseg_jax.data.augment import AugmentConfig, augment


# --- train ---------------------------------------------------------------------------------------------------------

def train_batches(source: Sequence[dict], *, global_batch: int, seed: int, process_index: int = 0,
                  process_count: int = 1, augment_cfg: AugmentConfig, ignore_id: int, num_threads: int = 8,
                  prefetch_batches: int | None = None) -> grain.DatasetIterator:
    """Endless local batches `{"image": uint8 (b, h, w, 3), "label": uint8 (b, h, w)}`, (h, w) = crop size.

    Global batch s holds positions [s*B, (s+1)*B) of an endless sequence that visits the source in a
    fresh seeded permutation each epoch; the example at position g is augmented with a generator
    seeded by (seed, g). So everything is a function of (seed, step) alone. Labels stay uint8 (a
    quarter of int32's host-to-device traffic); widen them on the device.

    The returned iterator has `get_state()` / `set_state(state)`; the state is `{"next_index": step}`,
    the same on every process. `num_threads` local batches are built in parallel (PIL releases the
    GIL); up to `prefetch_batches` (default num_threads + 2, 0 = read on demand) wait ready.
    """
    local_batch = _local_batch_size(global_batch, process_count, process_index)
    if len(source) == 0:
        raise ValueError("the training split is empty")
    examples = (grain.MapDataset.source(source)
                .shuffle(seed=_shuffle_seed(seed))
                # grain reshuffles every epoch with a seed derived from `seed` and the epoch; endless in effect,
                # counted so that a batch of 1 has a length Python's len() takes (repeat()'s sys.maxsize had not)
                .repeat(2**62 // len(source))
                .map_with_index(_TrainExample(seed, augment_cfg, ignore_id)))
    # Cut the endless sequence into blocks of b; global batch s is blocks s*P .. s*P + P-1.
    local = examples.batch(local_batch)[process_index::process_count]
    buffer = num_threads + 2 if prefetch_batches is None else prefetch_batches
    return iter(local.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer)))


@dataclasses.dataclass(frozen=True)
class _TrainExample:
    """Augments the record at global position `position` with a generator seeded by (seed, position)."""
    seed: int
    cfg: AugmentConfig
    ignore_id: int

    def __call__(self, position: int, record: dict) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, position])
        image, label = augment(record["image"], record["segmentation_mask"], rng, self.cfg, self.ignore_id)
        return {"image": image, "label": label}


def _shuffle_seed(seed: int) -> int:
    # grain shuffles epoch e with seed + e; hashing first keeps run `seed` from replaying run `seed + 1`
    # one epoch late.
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])


def _local_batch_size(global_batch: int, process_count: int, process_index: int) -> int:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside 0..{process_count - 1}")
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(f"global batch {global_batch} must be a positive multiple of the process count "
                         f"{process_count}")
    return global_batch // process_count


def devices_for(rows: int, devices: int) -> int:
    """The most of `devices` a batch of `rows` rows splits over evenly when it has fewer rows than them: the largest
    divisor of `devices` not above `rows` (1 at least)."""
    return max(d for d in range(1, devices + 1) if devices % d == 0 and d <= max(rows, 1))


# --- eval ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EvalBatches:
    """One pass over a split, batched by image size, as local batches `{"image": uint8 (b, H, W, 3), "label":
    uint8 (b, H, W)}`.

    Every global batch holds images of one size: padding an image to a larger neighbour's size changed what the
    network saw near its edges, and so its score (12 of 5,490 pixels of a 61x90 image), which then depended on
    the batch size and the split's order, and differed from predict's. The split's images are grouped by size (the
    sizes in the order they first appear, each size's images in split order), so that portrait and landscape photos
    in turn fill whole batches rather than one each; a size's last batch is filled up with padding rows (zero
    image, label all `ignore_id`) that count nowhere, and `real_rows` gives each example's row in split order. A
    batch holds `global_batch` images, or fewer of a size whose batch would pass `max_pixels` (8 12-megapixel
    photos took 23 GB to score), in multiples of `unit` (the devices a batch is split over), or where one each
    would pass it, a divisor of `unit` down to `least` (a batch then runs on as many devices as it has rows). Each
    batch shape compiles once. The sizes are read once, when the first pass starts; every process plans the same
    batches, so they agree on each batch's shape without reading each other's rows. Iterate as often as you like;
    each iteration is a fresh pass.
    """
    source: Sequence[dict]
    global_batch: int
    ignore_id: int
    process_index: int = 0
    process_count: int = 1
    num_threads: int = 4
    max_pixels: int | None = None
    unit: int = 1
    least: int = 1

    @property
    def num_examples(self) -> int:
        return len(self.source)

    @property
    def num_batches(self) -> int:
        return len(self._plan)

    @property
    def real_rows(self) -> np.ndarray:
        """For each example, in source order, its row in the pass's outputs concatenated batch after batch."""
        rows = np.empty(self.num_examples, np.int64)
        flat = (position for _, positions in self._plan for position in positions)
        for row, position in enumerate(flat):
            if position is not None:
                rows[position] = row
        return rows

    def __len__(self) -> int:
        return self.num_batches

    def batch_positions(self) -> list[tuple[int | None, ...]]:
        """Each global batch's rows: their positions in the source, None for a padding row."""
        return [positions for _, positions in self._plan]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        chunks = []
        for size, positions in self._plan:
            local = _local_batch_size(len(positions), self.process_count, self.process_index)
            chunks.append((size, positions[self.process_index * local:(self.process_index + 1) * local]))
        options = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=self.num_threads + 2)
        return iter(grain.MapDataset.source(chunks).map(self._load_batch).to_iter_dataset(options))

    def _load_batch(self, chunk: tuple[tuple[int, int], tuple[int | None, ...]]) -> dict[str, np.ndarray]:
        (height, width), positions = chunk
        images = np.zeros((len(positions), height, width, 3), np.uint8)
        labels = np.full((len(positions), height, width), self.ignore_id, np.uint8)
        for row, position in enumerate(positions):
            if position is not None:
                record = self.source[position]
                images[row] = record["image"]
                labels[row] = record["segmentation_mask"].reshape(height, width)
        return {"image": images, "label": labels}

    @functools.cached_property  # planned once, not per pass
    def _plan(self) -> list[tuple[tuple[int, int], tuple[int | None, ...]]]:
        """Every global batch: its (H, W) and its rows' positions in the source, None for a padding row."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for position in range(self.num_examples):
            by_size.setdefault(tuple(self.source[position]["segmentation_mask"].shape[:2]), []).append(position)
        plan = []
        for size, positions in by_size.items():
            rows = self._rows(size[0] * size[1])
            for start in range(0, len(positions), rows):
                batch = positions[start:start + rows]
                plan.append((size, tuple(batch + [None] * (rows - len(batch)))))
        return plan

    def _rows(self, pixels: int) -> int:
        """global_batch, or the most multiples of `unit` within max_pixels, or the largest divisor of `unit` within
        it (`least` at the fewest)."""
        fit = self.max_pixels // pixels if self.max_pixels is not None else self.global_batch
        if fit >= self.global_batch:
            return self.global_batch
        if fit >= self.unit:
            return fit // self.unit * self.unit
        return max(self.least, devices_for(fit, self.unit))


def eval_batches(source: Sequence[dict], *, global_batch: int, ignore_id: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 4, max_pixels: int | None = None,
                 unit: int | None = None, least: int | None = None) -> EvalBatches:
    """One deterministic pass over `source`; see `EvalBatches` (it carries `num_examples`, `num_batches`). `unit`:
    the devices a batch is split over (default: one per process); `least`: the fewest rows of a batch (default:
    `unit`; fewer only in one process)."""
    _local_batch_size(global_batch, process_count, process_index)  # fail now, not at the first batch
    unit = unit or process_count
    least = least or unit
    if unit < 1 or unit % process_count or global_batch % unit:
        raise ValueError(f"unit {unit} must divide the global batch {global_batch} and be a multiple of the process "
                         f"count {process_count}")
    if unit % least or (least < unit and process_count > 1):
        raise ValueError(f"least {least} must divide unit {unit}, and be it with {process_count} processes")
    if len(source) == 0:
        raise ValueError("the evaluation split is empty")
    return EvalBatches(source, global_batch, ignore_id, process_index, process_count, num_threads, max_pixels, unit,
                       least)
