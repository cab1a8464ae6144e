"""Augmentation keeps labels honest and aligned; the pipelines are deterministic, resumable and process-count free."""
import numpy as np
import pytest

from streetseg_jax.data.augment import AugmentConfig, augment
from streetseg_jax.data.pipeline import eval_batches, train_batches

IGNORE = 255
NUM_CLASSES = 8
PALETTE = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200],
                    [200, 200, 30], [200, 30, 200], [30, 200, 200], [120, 120, 120]], np.uint8)
JITTER = dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)


def block_scene(height=96, width=128, block=16, seed=0):
    """A mask of random class blocks (not left-right symmetric) and an image coloured by class."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, NUM_CLASSES, (height // block, width // block), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((block, block), np.uint8))
    return PALETTE[mask], mask


def constant_source(n, height=24, width=32):
    """Record i has image value i + 1 everywhere and label i % K, so a batch row tells which record it was."""
    return [{"image": np.full((height, width, 3), i + 1, np.uint8),
             "segmentation_mask": np.full((height, width, 1), i % NUM_CLASSES, np.uint8),
             "file_name": f"{i}.png".encode()} for i in range(n)]


class RecordingSource:
    """A source that remembers which records were read."""

    def __init__(self, records):
        self.records, self.reads = records, []

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        self.reads.append(int(index))
        return self.records[index]


def record_ids(batch):
    return [int(v) - 1 for v in batch["image"][:, 0, 0, 0]]


def take(iterator, steps):
    return [next(iterator) for _ in range(steps)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


# --- augment -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("base_scale, scale_range", [(1.0, (0.5, 2.0)), (0.5, (0.75, 1.5)), (1.0, (1.3, 1.7))])
def test_augmented_mask_holds_only_input_ids(base_scale, scale_range):
    rng = np.random.default_rng(1)
    mask = rng.integers(0, NUM_CLASSES, (60, 80), dtype=np.uint8)  # salt and pepper: every pixel an edge
    mask[rng.random(mask.shape) < 0.1] = IGNORE
    image = PALETTE[mask % NUM_CLASSES]
    cfg = AugmentConfig(base_scale, scale_range, (48, 64), True, **JITTER)
    for _ in range(20):
        out_image, out_mask = augment(image, mask, rng, cfg, IGNORE)
        assert out_image.shape == (48, 64, 3) and out_image.dtype == np.uint8
        assert out_mask.shape == (48, 64) and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= set(range(NUM_CLASSES)) | {IGNORE}


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned(seed):
    image, mask = block_scene(seed=seed)
    cfg = AugmentConfig(1.0, (0.6, 1.6), (64, 80), flip=True)
    out_image, out_mask = augment(image, mask[..., None], np.random.default_rng(seed), cfg, IGNORE)
    # Away from class edges (uniform 7x7 neighbourhood) the colour must be the class's colour.
    windows = np.lib.stride_tricks.sliding_window_view(out_mask, (7, 7))
    uniform = (windows == windows[..., 3:4, 3:4]).all(axis=(-1, -2)) & (windows[..., 3, 3] != IGNORE)
    centre_mask, centre_image = out_mask[3:-3, 3:-3], out_image[3:-3, 3:-3]
    assert uniform.sum() > 100
    diff = np.abs(centre_image[uniform].astype(int) - PALETTE[centre_mask[uniform]].astype(int))
    assert diff.max() <= 2


def test_flip_moves_image_and_mask_together():
    image, mask = block_scene(48, 64)
    cfg = AugmentConfig(1.0, (1.0, 1.0), (48, 64), flip=True)
    flipped = 0
    for seed in range(20):
        out_image, out_mask = augment(image, mask, np.random.default_rng(seed), cfg, IGNORE)
        is_flipped = np.array_equal(out_mask, mask[:, ::-1])
        assert is_flipped or np.array_equal(out_mask, mask)
        np.testing.assert_array_equal(out_image, image[:, ::-1] if is_flipped else image)
        flipped += is_flipped
    assert 0 < flipped < 20


def test_crop_larger_than_scaled_image_pads_mask_with_ignore():
    image, mask = block_scene(40, 60, block=10)
    cfg = AugmentConfig(0.5, (1.0, 1.0), (32, 48), flip=False, pad_color=(7, 8, 9))
    out_image, out_mask = augment(image, mask, np.random.default_rng(0), cfg, IGNORE)
    padded = out_mask == IGNORE
    assert (~padded).sum() == 20 * 30  # the whole half-size image, nothing more
    assert (out_image[padded] == (7, 8, 9)).all()
    assert (out_mask[~padded] < NUM_CLASSES).all()


def test_augment_is_a_function_of_the_generator_state():
    image, mask = block_scene()
    cfg = AugmentConfig(1.0, (0.75, 1.5), (64, 64), True, **JITTER)
    first = augment(image, mask, np.random.default_rng(5), cfg, IGNORE)
    again = augment(image, mask, np.random.default_rng(5), cfg, IGNORE)
    other = augment(image, mask, np.random.default_rng(6), cfg, IGNORE)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_jitter_changes_colours_but_not_the_mask():
    image, mask = block_scene(48, 64)
    cfg = AugmentConfig(1.0, (1.0, 1.0), (48, 64), flip=False, **JITTER)
    out_image, out_mask = augment(image, mask, np.random.default_rng(3), cfg, IGNORE)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.array_equal(out_image, image)


# --- train pipeline ------------------------------------------------------------------------------------------------

TRAIN_CFG = AugmentConfig(1.0, (1.0, 1.3), (16, 24), flip=True)  # no padding: pixel (0, 0) names the record


def make_train(source, process_index=0, process_count=1, seed=3, **kwargs):
    return train_batches(source, global_batch=4, seed=seed, process_index=process_index,
                         process_count=process_count, augment_cfg=TRAIN_CFG, ignore_id=IGNORE,
                         num_threads=2, **kwargs)


def test_train_batches_shapes_and_epochs():
    source = constant_source(8)
    batches = take(make_train(source), 6)  # three epochs of two batches
    assert batches[0]["image"].shape == (4, 16, 24, 3) and batches[0]["image"].dtype == np.uint8
    assert batches[0]["label"].shape == (4, 16, 24) and batches[0]["label"].dtype == np.uint8
    epochs = [record_ids(batches[i]) + record_ids(batches[i + 1]) for i in (0, 2, 4)]
    for order in epochs:
        assert sorted(order) == list(range(8))
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # reshuffled per epoch


def test_train_batches_are_determined_by_the_seed():
    source = constant_source(10)
    assert_batches_equal(take(make_train(source), 4), take(make_train(source), 4))
    other = take(make_train(source, seed=4), 4)
    assert any(record_ids(a) != record_ids(b) for a, b in zip(take(make_train(source), 4), other))


def test_restored_state_gives_the_same_following_batches():
    source = constant_source(10)
    iterator = make_train(source)
    take(iterator, 3)
    state = iterator.get_state()
    expected = take(iterator, 4)
    resumed = make_train(source)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 4), expected)


def test_process_local_batches_concatenate_to_the_global_batch():
    source = constant_source(10)
    whole = take(make_train(source), 5)
    halves = [take(make_train(source, p, 2), 5) for p in range(2)]
    for step, batch in enumerate(whole):
        for key in batch:
            np.testing.assert_array_equal(np.concatenate([h[step][key] for h in halves]), batch[key])


def test_a_one_process_state_resumes_on_two_processes():
    source = constant_source(10)
    iterator = make_train(source)
    take(iterator, 3)
    state = iterator.get_state()
    expected = take(iterator, 2)
    halves = []
    for p in range(2):
        resumed = make_train(source, p, 2)
        resumed.set_state(state)
        halves.append(take(resumed, 2))
    for step, batch in enumerate(expected):
        np.testing.assert_array_equal(np.concatenate([h[step]["image"] for h in halves]), batch["image"])


def test_processes_read_disjoint_records_that_cover_the_global_batch():
    records = constant_source(24)
    sources = [RecordingSource(records) for _ in range(3)]
    # No prefetch, so reads stop exactly at what was consumed: 3 steps x 4 = 12 positions of epoch one.
    take(make_train(sources[0], prefetch_batches=0), 3)
    for p in range(2):
        take(make_train(sources[1 + p], p, 2, prefetch_batches=0), 3)
    whole, first, second = (s.reads for s in sources)
    assert len(first) == len(second) == 6 and not set(first) & set(second)
    assert sorted(first + second) == sorted(whole)


def test_a_batch_of_one_row_per_process_is_the_rows_of_the_larger_batch():
    """A global batch of 1 (or of 1 per process) raised OverflowError: the endless sequence of single examples had a
    length Python's len() could not take."""
    source = constant_source(10)
    fours = take(make_train(source), 3)
    ones = take(train_batches(source, global_batch=1, seed=3, augment_cfg=TRAIN_CFG, ignore_id=IGNORE,
                              num_threads=2), 12)
    per_process = [take(train_batches(source, global_batch=2, seed=3, process_index=p, process_count=2,
                                      augment_cfg=TRAIN_CFG, ignore_id=IGNORE, num_threads=2), 6) for p in range(2)]
    for step, batch in enumerate(fours):        # positions 4s .. 4s+3, one at a time
        np.testing.assert_array_equal(np.concatenate([b["image"] for b in ones[4 * step:4 * step + 4]]),
                                      batch["image"])
    assert [record_ids(b) for b in per_process[0]] == [record_ids(b) for b in ones[0::2]]
    assert [record_ids(b) for b in per_process[1]] == [record_ids(b) for b in ones[1::2]]


def test_train_rejects_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="multiple"):
        train_batches(constant_source(4), global_batch=5, seed=0, process_count=2,
                      augment_cfg=TRAIN_CFG, ignore_id=IGNORE)


# --- eval pipeline -------------------------------------------------------------------------------------------------

def test_eval_covers_every_example_once_and_pads_with_ignore():
    source = constant_source(9)  # the last global batch: process 0 gets 8 and padding, process 1 only padding
    per_process = [list(eval_batches(source, global_batch=4, ignore_id=IGNORE, process_index=p, process_count=2))
                   for p in range(2)]
    assert len(per_process[0]) == len(per_process[1]) == 3
    rows = [(img, lab) for step in zip(*per_process) for local in step for img, lab in zip(local["image"],
                                                                                       local["label"])]
    real = [(img, lab) for img, lab in rows if img[0, 0, 0] > 0]
    padding = [(img, lab) for img, lab in rows if img[0, 0, 0] == 0]
    assert [int(img[0, 0, 0]) - 1 for img, _ in real] == list(range(9))
    assert all((lab == i % NUM_CLASSES).all() for i, (_, lab) in enumerate(real))
    assert len(padding) == 3 and all((lab == IGNORE).all() for _, lab in padding)
    batches = eval_batches(source, global_batch=4, ignore_id=IGNORE)
    assert batches.num_examples == 9 and batches.num_batches == len(batches) == 3


def test_eval_batches_hold_one_size_each_and_map_back_to_the_order():
    """Images were padded to the largest in their batch: what the network saw near an image's edges, and so its
    score, depended on its neighbours, the batch size and the split's order. Then a batch ended at every change of
    size: portrait and landscape photos in turn made batches of one image and padding."""
    landscape = constant_source(3, 20, 30)
    portrait = [{**record, "image": record["image"] + 10} for record in constant_source(2, 30, 20)]
    source = [landscape[0], portrait[0], landscape[1], portrait[1], landscape[2]]
    batches = eval_batches(source, global_batch=2, ignore_id=IGNORE)
    out = list(batches)
    assert [b["image"].shape for b in out] == [(2, 20, 30, 3), (2, 20, 30, 3), (2, 30, 20, 3)] == \
        [(2, *b["label"].shape[1:], 3) for b in out]
    assert len(batches) == 3 and batches.num_examples == 5 and batches.real_rows.tolist() == [0, 4, 1, 5, 2]
    padding = out[1]
    assert (padding["label"][1] == IGNORE).all() and (padding["image"][1] == 0).all()
    firsts = np.concatenate([b["image"][:, 0, 0, 0] for b in out])[batches.real_rows]    # a row's record
    assert firsts.tolist() == [int(record["image"][0, 0, 0]) for record in source]


def test_eval_with_several_processes_agrees_on_every_batch_shape():
    """Processes cannot see each other's rows: each padded its batch to its own rows' size (or raised, asking for
    an option no command could pass), and a process whose batch had another shape left the others waiting."""
    source = constant_source(2, 20, 30) + constant_source(2, 24, 26)
    batches = {p: list(eval_batches(source, global_batch=2, ignore_id=IGNORE, process_index=p, process_count=2))
               for p in range(2)}
    assert [b["image"].shape for b in batches[0]] == [b["image"].shape for b in batches[1]] == \
        [(1, 20, 30, 3), (1, 24, 26, 3)]
    np.testing.assert_array_equal(batches[1][1]["image"][0], source[3]["image"])
    single = list(eval_batches(source, global_batch=2, ignore_id=IGNORE))
    assert [b["image"].shape for b in single] == [(2, 20, 30, 3), (2, 24, 26, 3)]


def test_eval_batches_of_large_images_hold_fewer_rows_in_multiples_of_the_devices():
    """8 12-megapixel photos to a batch took 23 GB to score: the kernel killed the run, and its training with it."""
    source = constant_source(3, 20, 30) + constant_source(5, 8, 10)
    batches = eval_batches(source, global_batch=8, ignore_id=IGNORE, max_pixels=4 * 20 * 30, unit=2)
    shapes = [b["image"].shape[:3] for b in batches]
    assert shapes == [(4, 20, 30), (8, 8, 10)]     # 4 rows of the large size fit; all 8 of the small one
    assert sorted(batches.real_rows.tolist()) == [0, 1, 2, 4, 5, 6, 7, 8]
    tight = eval_batches(source, global_batch=8, ignore_id=IGNORE, max_pixels=100, unit=2)
    assert [b["image"].shape[0] for b in tight] == [2, 2, 2, 2, 2]     # never fewer than one row per device
    firsts = np.concatenate([b["image"][:, 0, 0, 0] for b in tight])[tight.real_rows]
    assert firsts.tolist() == [int(record["image"][0, 0, 0]) for record in source]
    with pytest.raises(ValueError, match="unit 3 must divide the global batch 8"):
        eval_batches(source, global_batch=8, ignore_id=IGNORE, unit=3)
    # A CPU's 8 devices share its memory: where 3 large images fit, 2 (a divisor of 8) run on 2 of them.
    shared = eval_batches(source, global_batch=8, ignore_id=IGNORE, max_pixels=3 * 20 * 30, unit=8, least=1)
    assert [b["image"].shape[0] for b in shared] == [2, 2, 8]
    with pytest.raises(ValueError, match="least 1 must divide unit 8, and be it with 2 processes"):
        eval_batches(source, global_batch=8, ignore_id=IGNORE, process_count=2, unit=8, least=1)


def test_a_batch_of_fewer_rows_than_devices_runs_on_the_most_that_split_it_evenly():
    from streetseg_jax.data.pipeline import devices_for

    assert [devices_for(rows, 8) for rows in (0, 1, 2, 3, 5, 7, 8)] == [1, 1, 2, 2, 4, 4, 8]
    assert [devices_for(rows, 6) for rows in (1, 4, 5, 6)] == [1, 3, 3, 6]
