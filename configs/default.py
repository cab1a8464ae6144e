"""The embedded default: the synthetic street scenes (built on first use) and a small U-Net.

Budget: 800 steps of batch 8 at about 10 images/s, about 12 minutes on 2 idle CPU cores; eval mIoU 0.67-0.70
measured, short of the 0.80 aimed for. Scenes are 360x480; training sees crops of the scenes at 0.375 scale
(135x180); evaluation runs the network at the same scale and scores at the native 360x480.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # --- data
    c.dataset = "street_seg/synthetic"
    c.data_dir = "~/tensorflow_datasets"
    c.train_split = "train"
    c.eval_split = "test"
    c.input_threads = 2
    c.augment = ml_collections.ConfigDict(dict(
        base_scale=0.375, scale_range=(0.8, 1.25), crop_size=(128, 176), flip=True,
        brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03))
    # --- model
    c.model = ml_collections.ConfigDict(dict(
        base_width=16, depth=4, upsample="transpose", dropout=0.0, dtype="float32"))
    # --- optimisation
    c.seed = 0
    c.batch_size = 8
    c.num_train_steps = 800
    c.learning_rate = 3e-3
    c.warmup_steps = 50
    c.lr_schedule = "cosine"
    c.end_learning_rate_factor = 0.01
    c.optimizer = "adamw"
    c.weight_decay = 1e-4
    c.grad_clip_norm = 1.0
    c.class_weights = "median_frequency"
    c.loss = "cross_entropy"          # or "cross_entropy+dice", "cross_entropy+lovasz" (streetseg_jax/losses.py)
    c.ema_decay = 0.0                 # > 0: evaluate, keep as best and predict with a moving average of the weights
    # --- evaluation, logging, checkpoints
    c.eval_batch_size = 8
    c.eval_scale = 0.375
    c.eval_flip_tta = False           # average each eval image's logits with its mirror image's
    c.eval_every_steps = 400
    c.log_every_steps = 50
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 3
    c.num_overlays = 4
    c.init_from = ""
    return c
