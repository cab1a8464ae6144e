"""Serve the model elsewhere: `python -m streetseg_jax.export --workdir DIR --output FILE`.

Serialises the inference function with `jax.export` (StableHLO with the weights inside) so it runs without this
package: no model code, no checkpoint, no flax. FILE is a zip archive holding
    model.jaxexport   the serialised function: uint8 RGB images (batch, height, width, 3) -> a dict of
                      "classes" uint8 (batch, height, width), "confidence" float32 (batch, height, width),
                      "logits" float32 (batch, height, width, classes), as chosen with --outputs
    label_map.json    class ids, names and colours
    info.json         input and output shapes, the checkpoint and run it came from (work directory, weights
                      fingerprint, git commit, dataset), the training images' size, the config
    README.txt        how to load and run it: USAGE below

Batch, height and width are symbolic, so one file serves any image size, when the model runs at the images' own
scale (config.eval_scale == 1). A model that sees images resized (eval_scale, eval_extra_scales) is exported for
fixed images, by default its training images' size (--height and --width choose another): the resized size cannot
be written symbolically (jax.export shape polymorphism has no rounding of a product).
Test-time augmentation follows the run, as in `predict`: the network also at its eval_extra_scales and, with its
eval_flip_tta, on the mirror images, unless --extra_scales or --[no_]flip_tta say otherwise (info.json records
what went in).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

from streetseg_jax.cli import (ArgumentParser, add_checkpoint_flag, add_extra_scales_flag, add_flip_tta_flags,
                               check_workdir, fail, hold_while_loading, normalise_argv,
                               quiet_libraries, run_command)

USAGE = """Load and run it with jax and flatbuffers alone (pip install jax flatbuffers; jax as new as the
one that wrote it, info.json's jax_version, or newer: an older one fails with "exported for 0 devices"):

    import json, zipfile, jax
    with zipfile.ZipFile(FILE) as archive:
        exported = jax.export.deserialize(archive.read("model.jaxexport"))
        label_map = json.loads(archive.read("label_map.json"))
    classes = exported.call(images)["classes"]        # images: uint8 numpy array (B, H, W, 3)

It takes images of info.json's input shape and runs each as it is given. Where that shape names a fixed height
and width (a model that sees images resized), export one (--height, --width) for the size predict gives the
network: the photo's own, or for one far from the training size that of the second point below; squeezing a photo
of another aspect ratio into the export's size gives other masks than predict's (1-7% of the pixels of a 1920x1080
photo resized to 360x480 differed). `python -m streetseg_jax.predict` also
- reads a photo as labels.images.open_photo does: turned upright as its EXIF says (PIL.ImageOps.exif_transpose),
  RGBA composited on black with its fully transparent pixels set to the ignore id in the mask afterwards, 16-bit
  grey divided by 65535, 32-bit and float grey by the first of 1 (float only), 255 or 65535 that holds every value
  (else by its largest), times 255 (labels.images.to_rgb; PIL's convert("RGB") turns a 16-bit PNG white);
- runs one far from the training images' size (its shorter side over 1.5 times theirs or under 2/3: info.json's
  train_image_size) resized so that its shorter side is theirs, then resizes the logits back bilinearly: export for
  that size with --outputs logits and do the same (jax.image.resize(logits, (H, W, K), "bilinear"), then argmax;
  2 of the 2 million pixels of a 1920x1080 photo differed from predict's mask);
- tiles a large one.
On upright RGB photos that need none of these its classes equal predict's masks byte for byte.
"""
OUTPUTS = ("classes", "confidence", "logits")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")       # what jax.export lowers for
ARCHIVE_MODEL, ARCHIVE_LABELS, ARCHIVE_INFO, ARCHIVE_README = ("model.jaxexport", "label_map.json", "info.json",
                                                               "README.txt")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m streetseg_jax.export", description=__doc__, epilog=USAGE,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="training work directory (holds checkpoints/)")
    parser.add_argument("--output", required=True, help="archive to write: a new .zip file, or an earlier export "
                        "to replace")
    add_checkpoint_flag(parser)
    parser.add_argument("--height", type=int, help="fixed image height, with --width (default: symbolic; for a "
                        "model that sees images resized, its training images')")
    parser.add_argument("--width", type=int, help="fixed image width, with --height")
    parser.add_argument("--batch_size", type=int, help="fixed batch size (default: symbolic)")
    parser.add_argument("--outputs", default="classes,confidence",
                        help=f"comma-separated, from {','.join(OUTPUTS)} (default classes,confidence)")
    add_flip_tta_flags(parser, "average with the mirror image's logits")
    add_extra_scales_flag(parser)
    parser.add_argument("--platforms", default="cpu,cuda", help="platforms to lower for (default cpu,cuda)")
    return parser.parse_args(argv)


if __name__ == "__main__":      # --help and a mistyped flag answer before JAX loads (3 s)
    hold_while_loading()
    parse_args(normalise_argv(sys.argv[1:]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import export as jax_export  # noqa: E402

from streetseg_jax import atomic  # noqa: E402
from streetseg_jax.evaluator import apply_tta_flags, network_scales, predict_logits, tta_logits  # noqa: E402
from streetseg_jax.inference import TrainedModel, load_model, scaled_logits  # noqa: E402
from streetseg_jax.run import recorded  # noqa: E402


def serving_function(trained: TrainedModel, outputs=("classes", "confidence"), flip_tta: bool = False):
    """uint8 (B, H, W, 3) -> dict of the chosen outputs, with the weights closed over (they become constants)."""
    model, scales = trained.model(), network_scales(trained.config)
    stride = 2 ** int(trained.config.model.get("depth", 4))

    def logits_fn(model, images, scale):
        if scale != 1.0:
            return scaled_logits(model, images, scale)
        height, width = images.shape[1:3]
        return predict_logits(model, pad_to_stride(images, stride), scale)[:, :height, :width]

    def serve(images):
        logits = tta_logits(logits_fn, model, images, scales, flip_tta)
        every = {"classes": lambda: jnp.argmax(logits, axis=-1).astype(jnp.uint8),
                 "confidence": lambda: jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1),
                 "logits": lambda: logits}
        return {name: every[name]() for name in outputs}

    return serve


def pad_to_stride(images, stride: int):
    """Edge-pad H and W at the bottom/right to a multiple of the stride, as the U-Net itself does.

    Written as stride * ceil(size / stride) rather than the U-Net's `-size % stride`, because with symbolic sizes
    jax.export can then prove that the padded size halves evenly at every level (it cannot from a modulo), and the
    model's own padding becomes a no-op.
    """
    height, width = images.shape[1:3]
    padded_h = (height + stride - 1) // stride * stride
    padded_w = (width + stride - 1) // stride * stride
    return jnp.pad(images, ((0, 0), (0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")


def input_spec(batch: int | None, height: int | None, width: int | None) -> jax.ShapeDtypeStruct:
    """uint8 (batch, height, width, 3); every size not given is a symbolic dimension."""
    names = [str(v) if v else name for v, name in ((batch, "batch"), (height, "height"), (width, "width"))]
    return jax.ShapeDtypeStruct(jax_export.symbolic_shape(", ".join(names) + ", 3"), jnp.uint8)


def export_model(trained: TrainedModel, path: str | Path, *, batch: int | None = None, height: int | None = None,
                 width: int | None = None, outputs=("classes", "confidence"), flip_tta: bool = False,
                 platforms=("cpu", "cuda"), workdir: str | Path | None = None) -> dict:
    """Write the archive at `path` (atomically); returns its info.json contents. `workdir`: the run the model
    comes from, which info.json names with its code's commit and dataset (run_of)."""
    scales = network_scales(trained.config)
    if scales != (1.0,) and not (height and width):
        raise ValueError(f"this model sees images at scales {', '.join(f'{s:g}' for s in scales)} (eval_scale, "
                         "eval_extra_scales): give a fixed --height and --width "
                         "(symbolic sizes work only for models evaluated at scale 1)")
    spec = input_spec(batch, height, width)
    exported = jax_export.export(jax.jit(serving_function(trained, outputs, flip_tta)),
                                 platforms=tuple(platforms))(spec)
    info = _info(trained, spec, outputs, flip_tta, exported.platforms)
    info["run"] = run_of(trained, workdir)
    _write_archive(Path(path), exported.serialize(), trained.label_map.to_json(), json.dumps(info, indent=1))
    return info


def _info(trained: TrainedModel, spec, outputs, flip_tta: bool, platforms) -> dict:
    shape = [d if isinstance(d, int) else str(d) for d in spec.shape]
    k, scales = trained.label_map.num_classes, network_scales(trained.config)
    described = {"classes": ("uint8", shape[:3]), "confidence": ("float32", shape[:3]),
                 "logits": ("float32", shape[:3] + [k])}
    return {
        "format": "streetseg_jax export 1",
        "input": {"dtype": "uint8", "shape": shape, "channels": "RGB, 0-255"},
        "outputs": {name: {"dtype": described[name][0], "shape": described[name][1]} for name in outputs},
        "checkpoint": {"source": trained.source, "step": trained.step},
        "train_image_size": list(trained.image_size) if trained.image_size else None,
        "eval_scale": scales[0], "eval_extra_scales": list(scales[1:]), "flip_tta": flip_tta,
        "platforms": list(platforms), "jax_version": jax.__version__, "config": trained.config.to_dict(),
    }


def run_of(trained: TrainedModel, workdir: str | Path | None) -> dict:
    """Where the exported model comes from, for a deployer to trace it: the run's work directory, a fingerprint of
    the weights (as predict.json records it), and the git commit and dataset its config.json recorded."""
    run = {"workdir": str(Path(workdir).resolve()) if workdir else None, "weights": trained.weights_fingerprint()}
    if workdir is None:
        return run
    return {**run, **{key: value for key in ("git_commit", "dataset")
                      if (value := recorded(Path(workdir), "provenance", key)) is not None}}


def _write_archive(path: Path, model_bytes: bytes, label_map_json: str, info_json: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in ((ARCHIVE_MODEL, model_bytes), (ARCHIVE_LABELS, label_map_json),
                           (ARCHIVE_INFO, info_json), (ARCHIVE_README, USAGE.replace("FILE", repr(path.name), 1))):
            archive.writestr(_entry(name), data)
    atomic.write_bytes(path, buffer.getvalue())


def _entry(name: str) -> zipfile.ZipInfo:
    """An archive entry readable by everyone (rw-r--r--; writestr's own was rw------- for the service account
    that unzips it) and dated 1980-01-01, so that the same model exports to the same bytes."""
    entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
    return entry


# ---------------------------------------------------------------------------------------------------------------
def _is_export(path: Path) -> bool:
    """Whether `path` is an archive this command wrote (its info.json says the format): one to replace."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(ARCHIVE_INFO)).get("format", "").startswith("streetseg_jax export")
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return False


def _check_args(args) -> tuple[str, ...]:
    outputs = tuple(o.strip() for o in args.outputs.split(",") if o.strip())
    if not outputs or set(outputs) - set(OUTPUTS):
        fail(f"--outputs must name some of {', '.join(OUTPUTS)}, got {args.outputs!r}")
    if Path(args.output).is_dir():
        fail(f"--output {args.output} is a folder: name the archive to write, e.g. {Path(args.output) / 'model.zip'}")
    if Path(args.output).suffix.lower() != ".zip":
        fail(f"--output {args.output}: the export is a zip archive; name it so, e.g. "
             f"{Path(args.output).with_suffix('.zip')}")
    if Path(args.output).is_file() and not _is_export(Path(args.output)):
        fail(f"--output {args.output} exists and is no export of this package (it holds no {ARCHIVE_INFO} of one); "
             "give a new file (it would be replaced)")
    existing = next(p for p in Path(args.output).absolute().parents if p.exists())
    if not existing.is_dir():
        fail(f"--output {args.output}: {existing} is a file, not a folder")
    if (args.height is None) != (args.width is None):
        fail("give both --height and --width, or neither (symbolic sizes)")
    platforms = list(dict.fromkeys(p.strip() for p in args.platforms.split(",")))
    unknown = set(platforms) - set(PLATFORMS)
    if unknown:
        fail(f"--platforms {args.platforms!r}: name some of {', '.join(PLATFORMS)}")
    for name in ("height", "width", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name} must be positive, got {value}")
    args.platforms = ",".join(platforms)
    return outputs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    outputs = _check_args(args)
    check_workdir(args.workdir)
    try:
        trained = load_model(args.workdir, args.checkpoint, say=lambda m: print(m, file=sys.stderr))
        flip_tta = apply_tta_flags(trained.config, args.flip_tta, args.extra_scales)
        height, width = args.height, args.width
        if height is None and network_scales(trained.config) != (1.0,) and trained.image_size:
            height, width = trained.image_size
            print(f"note: this model sees images resized, which a symbolic size cannot say: exported for "
                  f"{height}x{width} images, its training images' size (--height and --width choose another)",
                  file=sys.stderr)
        info = export_model(trained, args.output, batch=args.batch_size, height=height, width=width,
                            outputs=outputs, flip_tta=flip_tta, platforms=args.platforms.split(","),
                            workdir=args.workdir)
    except (OSError, ValueError) as e:
        fail(str(e))
    except ImportError as e:      # jax serialises through flatbuffers, an optional dependency of jax
        fail(f"cannot serialise: {e}")
    size = Path(args.output).stat().st_size / 2**20
    which = trained.source if trained.source.startswith("step") else f"{trained.source} checkpoint, step {trained.step}"
    print(f"wrote {args.output} ({size:.1f} MiB): {which}; "
          f"input {info['input']['shape']} uint8, outputs {', '.join(outputs)}; "
          f"platforms {', '.join(info['platforms'])}")
    return 0


if __name__ == "__main__":
    quiet_libraries()
    run_command(main, "no model was written")
