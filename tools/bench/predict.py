"""predict: inference images/second of the U-Net beside the PyTorch peer, and the time to predict a 4000x3000 photo.

    python tools/benchmark.py predict [--batch 8 --height 368 --width 480 --classes 11] [--upsample transpose]

images_per_second: our compiled function (uint8 images on the device -> class ids) on a batch of --batch images
of --height x --width at full resolution, the default config's network (base width 16, depth 4) with
--upsample (default transpose: the default config's and the peer's architecture; `--with_depth_to_space` also
times the depth_to_space upsampling as alternatives.depth_to_space). peers.torch: tools/peers/unet_torch.py, the
same architecture, eval mode, inference_mode, channels_last, same shape, forward and argmax; skipped when torch is
not importable. When it runs, --height and --width must be multiples of 16: the peer does not pad.
ratio_torch = images_per_second / peers.torch. seconds_4000x3000: `Predictor.predict_one` on a 4000x3000
photo with the default config's eval_scale and window: tiling, logits to the host, blending, argmax, confidence.
Each figure is the median over --repeats timed runs after one untimed warm-up run (compilation); ours and the
peer take turns, so a change in the machine's load during the run slows both alike.
Weights are freshly initialised: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import (interleaved_medians, median_wall_and_cpu_seconds, progress,
                          refuse_sizes_peers_cannot_take)
from streetseg_jax import sharding
from streetseg_jax.models.unet import UPSAMPLE_MODES

UNITS = {
    "images_per_second": "images/s",
    "peers.torch": "images/s",
    "ratio_torch": "x",
    "alternatives.depth_to_space": "images/s",
    "seconds_4000x3000": "s",
    "windows_4000x3000": "windows",
}
ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--height", type=int, default=368)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--classes", "--num_classes", dest="num_classes", type=int, default=11)
    parser.add_argument("--upsample", default="transpose", choices=UPSAMPLE_MODES,
                        help="our upsampling layer (the peer's: transpose)")
    parser.add_argument("--with_depth_to_space", action="store_true",
                        help="also time our network with depth_to_space upsampling (alternatives.depth_to_space)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    parser.add_argument("--photo_repeats", type=int, default=3, help="timed 4000x3000 predictions")
    parser.add_argument("--skip_photo", action="store_true", help="leave out the 4000x3000 timing")
    parser.add_argument("--no_peers", "--skip_peer", dest="skip_peer", action="store_true",
                        help="leave out the PyTorch peer")


def run(args: argparse.Namespace) -> dict:
    if not args.skip_peer and importlib.util.find_spec("torch") is not None:
        refuse_sizes_peers_cannot_take(args.height, args.width, "--no_peers")
    sharding.split_cpu_into_cores(args.batch)
    result = {"device": jax.devices()[0].device_kind, "devices": jax.device_count(),
              "shape": f"{args.batch}x{args.height}x{args.width}", "upsample": args.upsample}
    calls = {"ours": ours_call(args, args.upsample)}
    peer = None if args.skip_peer else torch_call(args)
    if peer is not None:
        calls["torch"] = peer
    if args.with_depth_to_space and args.upsample != "depth_to_space":
        calls["depth_to_space"] = ours_call(args, "depth_to_space")
    progress(f"timing {', '.join(calls)} in turn, {args.repeats} runs each after a warm-up (compilation)")
    rates = {name: args.batch / seconds for name, seconds in interleaved_medians(calls, args.repeats).items()}
    progress(", ".join(f"{name}: {rate:.4g} images/s" for name, rate in rates.items()))
    result["images_per_second"] = rates["ours"]
    if "torch" in rates:
        result["peers"] = {"torch": rates["torch"]}
        result["ratio_torch"] = rates["ours"] / rates["torch"]
    if "depth_to_space" in rates:
        result["alternatives"] = {"depth_to_space": rates["depth_to_space"]}
    if not args.skip_photo:
        progress("timing a 4000x3000 photo")
        result["seconds_4000x3000"], result["windows_4000x3000"] = photo_seconds(args)
    return result


def default_config(upsample: str):
    spec = importlib.util.spec_from_file_location("default_config", ROOT / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.upsample = upsample
    config.eval_extra_scales = ()   # the network once, at one scale: the default's TTA is not what is timed
    config.eval_flip_tta = False
    return config


def untrained(upsample: str, num_classes: int):
    from streetseg_jax.inference import TrainedModel
    from streetseg_jax.labels.label_map import ClassInfo, LabelMap

    label_map = LabelMap(tuple(ClassInfo(i, f"class_{i}", (i, i, i)) for i in range(num_classes)))
    return TrainedModel.untrained(default_config(upsample), label_map)


def ours_call(args, upsample: str):
    """One batch through our compiled function: uint8 images already on the device -> class ids."""
    from streetseg_jax.evaluator import tta_logits
    from streetseg_jax.inference import scaled_logits
    from streetseg_jax.models.unet import eval_model

    trained = untrained(upsample, args.num_classes)
    mesh = sharding.make_mesh()     # as Predictor does: the batch split over every device, the weights on each
    weights = jax.device_put((trained.params, trained.model_state), sharding.replicated(mesh))

    @functools.partial(jax.jit, out_shardings=sharding.batch_sharding(mesh))
    def classes(weights, images):
        logits = tta_logits(scaled_logits, eval_model(trained.graphdef, *weights), images, 1.0, flip_tta=False)
        return jnp.argmax(logits, axis=-1).astype(jnp.uint8)

    images = jax.device_put(np.random.default_rng(0).integers(0, 256, (args.batch, args.height, args.width, 3),
                                                              np.uint8), sharding.batch_sharding(mesh))
    return lambda: classes(weights, images).block_until_ready()


def torch_call(args):
    try:
        from peers import unet_torch
    except ImportError as e:
        print(f"peer skipped: {e} (pip install '.[peers]')", file=sys.stderr)
        return None
    print(f"peer: {unet_torch.version()}", file=sys.stderr)
    return unet_torch.make_inference(args.batch, args.height, args.width, args.num_classes)


def photo_seconds(args) -> tuple[float, int]:
    from streetseg_jax.inference import Blender, Predictor

    trained = untrained(args.upsample, args.num_classes)
    predictor = Predictor(trained, batch_size=args.batch)
    photo = smooth_photo(3000, 4000)
    seconds = median_wall_and_cpu_seconds(lambda: predictor.predict_one(photo), args.photo_repeats)[0]
    tile = predictor.tile_for(3000, 4000)
    return seconds, len(Blender(3000, 4000, tile, predictor.overlap, 1).windows())


def smooth_photo(height: int, width: int) -> np.ndarray:
    from PIL import Image

    coarse = np.random.default_rng(1).integers(0, 256, (height // 16, width // 16, 3), np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))

