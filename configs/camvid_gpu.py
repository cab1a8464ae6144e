"""CamVid (street_seg/camvid) on one GPU, from scratch, at full resolution: the recipe for about 8 minutes of
training on one H100.

Budget: 6,000 steps of batch 16 (96,000 crops, about 260 epochs of the 367 train frames) at full resolution
(frames 360x480 scaled randomly by 0.75..1.5, random 352x480 crops, flips, colour jitter), a wider and deeper U-Net
(base width 32, 5 levels) computing in bfloat16 (parameters, BatchNorm statistics and the loss stay float32),
evaluated on `validation` every 500 steps at native 360x480 (eval_scale 1.0). The GPU figures (speed, val mIoU,
wall time) are still to be measured; the step count assumes about 12 steps/s, so check
`train/images_per_second` in metrics.jsonl and set num_train_steps to fit 8 minutes on your card.

    python -m streetseg_jax.main --config configs/camvid_gpu.py --workdir runs/camvid_gpu
"""
import importlib.util
from pathlib import Path

import ml_collections

_base = Path(__file__).with_name("camvid.py")
if not _base.is_file():     # a copy of this file in a folder of its own
    raise FileNotFoundError(f"{Path(__file__).name} starts from camvid.py beside it, which {_base.parent} lacks: copy "
                            "configs/camvid.py and configs/default.py there too")
_spec = importlib.util.spec_from_file_location("camvid_config", _base)
_camvid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_camvid)


def get_config() -> ml_collections.ConfigDict:
    c = _camvid.get_config()
    # Decoding and augmenting full-size frames on the host is what can starve a GPU: use the machine's cores.
    c.input_threads = 16
    c.augment.base_scale = 1.0
    c.augment.crop_size = (352, 480)
    c.model.base_width = 32
    c.model.depth = 5
    c.model.dtype = "bfloat16"
    c.batch_size = 16
    c.num_train_steps = 6000
    c.learning_rate = 2e-3
    c.warmup_steps = 200
    c.eval_batch_size = 16
    c.eval_scale = 1.0
    c.eval_extra_scales = ()          # the CPU recipe's extra TTA scales are for its half-scale network
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    return c
