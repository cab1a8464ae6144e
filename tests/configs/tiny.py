"""A tiny variant of the default config for tests: a small network on small synthetic scenes, a few steps."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("default_config", Path(__file__).parents[2] / "configs" / "default.py")
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)


def get_config():
    c = _default.get_config()
    c.input_threads = 1
    c.augment.base_scale = 1.0
    c.augment.crop_size = (48, 64)
    c.model.base_width = 4
    c.model.depth = 2
    c.batch_size = 4
    # Tests that train keep this step count where they can: the learning-rate schedule is compiled into the train
    # step, so one count means one compiled program, shared through the session's compilation cache.
    c.num_train_steps = 8
    c.learning_rate = 1e-2
    # Cross-entropy, not the default's + Lovasz: the tests that compare runs on different device and process layouts
    # need a loss whose gradient moves smoothly with float rounding, and Lovasz's jumps where two errors swap places.
    # tests/test_train.py trains with Lovasz on its own.
    c.loss = "cross_entropy"
    c.warmup_steps = 2
    c.eval_batch_size = 4
    c.eval_scale = 1.0
    c.eval_flip_tta = False
    c.eval_extra_scales = ()
    c.eval_every_steps = 3
    c.log_every_steps = 1
    c.checkpoint_every_steps = 3
    c.num_overlays = 2
    return c
