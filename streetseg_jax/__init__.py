"""streetseg_jax: semantic segmentation of street-level images in JAX.

The commands: `python -m streetseg_jax` lists them (each `python -m streetseg_jax.<name> --help`).

From Python (README.md, section "From Python"):
    streetseg_jax.inference   load_model(workdir), Predictor(trained).predict_one(image): a trained run's masks
    streetseg_jax.metrics     confusion_matrix(labels, preds, K, ignore_id), metrics_from_confusion: IoU, mIoU
    streetseg_jax.visualize   overlay, comparison, colorize: pictures; read_metrics(workdir): a run's records
    streetseg_jax.labels      label maps (labels.label_map.LabelMap), photos (labels.images.open_photo), masks
    streetseg_jax.data        the street_seg dataset; `import streetseg_jax.data.builder` registers it with TFDS
"""
__version__ = "0.1.0"
