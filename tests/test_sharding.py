"""Data parallelism on 8 forced CPU devices: the 8-device train step equals the 1-device step on the same global
batch, and the evaluation confusion matrix has identical integer counts. Runs in a subprocess, since the device
count is fixed when JAX starts."""
from __future__ import annotations

import textwrap
from pathlib import Path

from cpu_devices import run_on_cpu_devices

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, optax
    from conftest import tiny_config
    from test_train import tiny_batch
    from streetseg_jax import sharding, train
    from streetseg_jax.evaluator import Evaluator
    from streetseg_jax.labels.label_map import default_label_map

    assert jax.device_count() == 8, jax.devices()
    config = tiny_config()
    config.batch_size = config.eval_batch_size = 8
    batch = tiny_batch(batch=8, height=40, width=56)
    source = [{"image": batch["image"][i], "segmentation_mask": batch["label"][i, :, :, None].astype(np.uint8),
               "file_name": str(i)} for i in range(5)]

    def run(devices, evaluate_with=None):
        mesh = sharding.make_mesh(devices)
        # Plain SGD moves each parameter in proportion to its gradient. Adam's first steps move it by about the
        # learning rate times the gradient's sign, so a gradient that is zero up to rounding (summed in another
        # order on 8 devices) could flip a parameter by twice the learning rate and hide what is compared here.
        tx = optax.sgd(0.01)
        graphdef, state = train.init_state(config, 8, tx, mesh)
        start = jax.device_get(state)
        step = train.make_train_step(graphdef, tx, np.ones(8, np.float32), 255, mesh)
        state, metrics = step(state, sharding.global_batch(batch, mesh))  # from identical weights: equal metrics
        state, _ = step(state, sharding.global_batch(batch, mesh))
        # Evaluation is compared on identical weights: the two trainings agree only to float tolerance, and a
        # barely trained model's near-tied logits over flat image regions would flip whole regions.
        weights = jax.device_put(evaluate_with or (state.params, state.model_state), sharding.replicated(mesh))
        sums = Evaluator(graphdef, mesh, default_label_map(), config).sums(*weights, source)
        return start, jax.device_get(state), jax.device_get(metrics), sums

    one = run(jax.devices()[:1])
    eight = run(jax.devices(), evaluate_with=(one[1].params, one[1].model_state))
    # What the two steps changed agrees leaf by leaf to 3% of the leaf's largest change. Measured: 1e-7 of it at the
    # head, growing toward the input to 1e-2 at the first conv (BatchNorm's backward pass subtracts nearly equal sums,
    # so rounding them in another order grows layer by layer). A wrong loss normalisation would move the loss,
    # compared at 1e-5 below; per-device BatchNorm statistics would move everything from the head on.
    leaves = [jax.tree.leaves(tree) for tree in (one[0], one[1], eight[0], eight[1])]
    for start_one, end_one, start_eight, end_eight in zip(*leaves, strict=True):
        np.testing.assert_array_equal(start_one, start_eight)
        change_one = np.asarray(end_one, np.float64) - np.asarray(start_one, np.float64)
        change_eight = np.asarray(end_eight, np.float64) - np.asarray(start_eight, np.float64)
        np.testing.assert_allclose(change_eight, change_one, rtol=0, atol=3e-2 * np.abs(change_one).max() + 1e-9)
    np.testing.assert_allclose(one[2]["loss"], eight[2]["loss"], rtol=1e-5)
    np.testing.assert_array_equal(one[2]["confusion"], eight[2]["confusion"])
    np.testing.assert_array_equal(one[3]["confusion"], eight[3]["confusion"])
    assert one[3]["confusion"].sum() == 5 * 40 * 56 - 56 * 2  # rows 0-1 of example 0 are ignore
    # Images too large for one per device (a CPU's devices share its memory): batches of one image, each on one
    # device; the same counts.
    from streetseg_jax import evaluator as evaluator_module
    mesh = sharding.make_mesh()
    graphdef = train.init_state(config, 8, optax.sgd(0.01), mesh)[0]
    weights = jax.device_put((one[1].params, one[1].model_state), sharding.replicated(mesh))
    whole = Evaluator(graphdef, mesh, default_label_map(), config).per_image(*weights, source)
    evaluator_module.EVAL_BATCH_BYTES = 1
    small = Evaluator(graphdef, mesh, default_label_map(), config)
    assert [len(rows) for rows in small._eval_batches(source).batch_positions()] == [1] * 5
    np.testing.assert_array_equal(small.sums(*weights, source)["confusion"], one[3]["confusion"])
    np.testing.assert_array_equal(small.per_image(*weights, source)["confusion"], whole["confusion"])
    # Predicting on 8 devices: a call of fewer windows runs on as many devices (no windows of padding), and every
    # mask equals that of one device.
    from streetseg_jax.inference import Predictor, TrainedModel
    trained = TrainedModel(graphdef, one[1].params, one[1].model_state, default_label_map(), config, 2, "best")
    on_eight, on_one = Predictor(trained, window=64, batch_size=8), Predictor(trained, window=64, batch_size=8)
    on_one._devices = 1
    rng = np.random.default_rng(0)
    for height, width in ((40, 56), (150, 200)):    # one window; 12 windows, in calls of 8 and of 4
        image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        np.testing.assert_array_equal(on_eight.predict_one(image).mask, on_one.predict_one(image).mask)
    assert sorted(on_eight._on) == [1, 4, 8] and list(on_one._on) == [1], (on_eight._on, on_one._on)
    try:
        sharding.check_batch_size(sharding.make_mesh(), batch_size=12, eval_batch_size=8)
        raise AssertionError("batch 12 on 8 devices was accepted")
    except ValueError as e:     # the device counts that take both batches first: a resume keeps its recipe
        assert str(e) == ("batch_size 12 must divide by the number of devices (8): run on 1, 2 or 4 device(s) "
                          "(XLA_FLAGS's --xla_force_host_platform_device_count=N, which decides the CPU devices "
                          "here), or give batch sizes that do "
                          "(--config.batch_size=8; for a run under way, another batch_size is another recipe)"), e
    print("SHARDING-OK")
""")


def test_eight_device_step_and_eval_equal_one_device():
    proc = run_on_cpu_devices(SCRIPT, cwd=ROOT / "tests", PYTHONPATH=str(ROOT / "tests"))
    assert "SHARDING-OK" in proc.stdout, proc.stdout + proc.stderr


def test_a_batch_that_splits_over_fewer_devices_than_cores_says_so(monkeypatch):
    from streetseg_jax import sharding

    updates = {}
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(sharding.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(sharding.jax.config, "update", lambda key, value: updates.update({key: value}))
    monkeypatch.setattr(sharding, "_FEWER_DEVICES", "")
    sharding.split_cpu_into_cores(6, 8)
    assert updates == {"jax_num_cpu_devices": 2}
    note = sharding.fewer_devices_note()        # said by the run, on the CPU only (a GPU run never hears of it)
    assert note.startswith("note: 2 CPU device(s) for 4 cores: the batch sizes (6 and 8) do not divide by more")
    sharding.split_cpu_into_cores(8, 8)
    assert updates == {"jax_num_cpu_devices": 4} and sharding.fewer_devices_note() == ""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")      # theirs decides
    updates.clear()
    sharding.split_cpu_into_cores(8, 8, requested=4)
    assert updates == {} and sharding.fewer_devices_note() == ("note: --cpu_devices 4 is not taken: XLA_FLAGS's "
                                                               "--xla_force_host_platform_device_count decides the "
                                                               "CPU devices")       # it was taken without a word
    sharding.split_cpu_into_cores(6, 8)
    monkeypatch.setattr(sharding.jax, "default_backend", lambda: "gpu")
    assert sharding.fewer_devices_note() == ""


class FakeCoordinationService:
    """The key-value store of JAX's coordination service, as `sharding` reads it."""

    def __init__(self, stored: dict[str, str]):
        self.stored = stored

    def key_value_dir_get(self, prefix: str) -> list[tuple[str, str]]:
        return [(key, value) for key, value in self.stored.items() if key.startswith(prefix)]


def test_a_failed_collective_is_blamed_on_the_process_that_left_its_reason_else_on_its_kind(monkeypatch):
    """Survivors blamed each other (process 0 of 3, a survivor, named as the one that stopped; key "10" sorted
    before "2"), and this process's own out-of-memory was reported as another process lost."""
    import jax

    from streetseg_jax import sharding

    monkeypatch.setattr(jax, "process_count", lambda: 12)
    left = {"streetseg_jax/stopped/10": "error: ten", "streetseg_jax/stopped/2": "error: cannot read the data"}
    monkeypatch.setattr(sharding, "_client", lambda: FakeCoordinationService(left))
    gloo = RuntimeError("UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection closed by peer [127.0.0.1]:27365")
    assert sharding.lost_process(gloo) == "process 2 of 12 stopped: cannot read the data"
    monkeypatch.setattr(sharding, "_client", lambda: FakeCoordinationService({}))
    assert sharding.lost_process(gloo).startswith("the other processes cannot be reached: one stopped without a word")
    assert sharding.lost_process(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 GiB")) is None


def test_a_process_is_silent_only_while_the_service_answers_without_its_beat():
    """Process 0 frozen (it holds the coordination service): its last beat fell a second before the last answer, and
    it was named as a killed process instead of the service that stopped answering."""
    from streetseg_jax.sharding import SILENCE_S, silent_processes

    last_answer = 1000.0
    heard = {0: ("41", last_answer - 1.0), 1: ("7", last_answer - SILENCE_S - 1.0), 2: ("done", 0.0)}
    assert silent_processes(heard, last_answer) == [1]          # 0's last beat: a second before the last answer
    assert silent_processes(heard, last_answer + SILENCE_S) == [0, 1]
