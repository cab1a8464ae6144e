"""One tiny street scene written as every labelling tool's export: the seeds of tools/fuzz_readers.py and the
cross-format tests (every format must give the same mask as the VOC original).

    write_export(fmt, folder) -> the path to pass to the reader (the folder itself)

The scene is 40x30 pixels: sky above, a road below, a building drawn over both; class names of the default label
map. `expected_mask()` is the mask the VOC version rasterizes to; the mask-based formats (masks, coco_panoptic)
store exactly that mask.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from streetseg_jax.labels.convert import annotation_to_mask
from streetseg_jax.labels.formats.voc import read_voc, write_voc
from streetseg_jax.labels.label_map import default_label_map

WIDTH, HEIGHT, STEM = 40, 30, "street_1"
SCENE = [   # drawing order: later on top
    ("sky", [(0, 0), (40, 0), (40, 12), (0, 12)]),
    ("road", [(0, 20), (40, 18), (40, 30), (0, 30)]),
    ("building", [(10, 5), (30, 5), (30, 20), (10, 20)]),
]
FORMATS = ("voc", "mit_xml", "labelme", "coco", "coco_panoptic", "cvat", "labelbox", "cityscapes", "mapillary",
           "masks")


def write_export(fmt: str, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    globals()[f"_write_{fmt}"](folder)
    return folder


def expected_mask() -> np.ndarray:
    """What every format's reader + annotation_to_mask must give for the scene (default label map)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{STEM}.xml"
        write_voc(path, f"{STEM}.png", WIDTH, HEIGHT, [(name, [ring]) for name, ring in SCENE])
        return annotation_to_mask(read_voc(path), default_label_map()).mask


def _image(path: Path, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _xml(path: Path, root: ET.Element) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8") + b"\n")


# --- one writer per format -----------------------------------------------------------------------------------------
def _write_voc(folder: Path) -> None:
    _image(folder / "images" / f"{STEM}.png")
    (folder / "annotations").mkdir(exist_ok=True)
    write_voc(folder / "annotations" / f"{STEM}.xml", f"{STEM}.png", WIDTH, HEIGHT,
              [(name, [ring]) for name, ring in SCENE])


def _write_mit_xml(folder: Path) -> None:
    _image(folder / "Images" / f"{STEM}.png")
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{STEM}.png"
    ET.SubElement(root, "folder").text = ""
    size = ET.SubElement(root, "imagesize")
    ET.SubElement(size, "nrows").text, ET.SubElement(size, "ncols").text = str(HEIGHT), str(WIDTH)
    for i, (name, ring) in enumerate(SCENE):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text, ET.SubElement(obj, "deleted").text = name, "0"
        ET.SubElement(obj, "id").text = str(i)
        polygon = ET.SubElement(obj, "polygon")
        for x, y in ring:
            pt = ET.SubElement(polygon, "pt")
            ET.SubElement(pt, "x").text, ET.SubElement(pt, "y").text = str(x), str(y)
    _xml(folder / "Annotations" / f"{STEM}.xml", root)


def _write_labelme(folder: Path) -> None:
    _image(folder / f"{STEM}.png")
    shapes = [{"label": name, "points": [list(p) for p in ring], "group_id": None, "shape_type": "polygon",
               "flags": {}} for name, ring in SCENE]
    _json(folder / f"{STEM}.json", {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": f"{STEM}.png",
                                    "imageData": None, "imageHeight": HEIGHT, "imageWidth": WIDTH})


def _coco_base() -> dict:
    return {"images": [{"id": 1, "file_name": f"{STEM}.png", "width": WIDTH, "height": HEIGHT}],
            "categories": [{"id": i + 1, "name": name, "isthing": 0} for i, (name, _) in enumerate(SCENE)]}


def _write_coco(folder: Path) -> None:
    _image(folder / "images" / f"{STEM}.png")
    data = _coco_base()
    data["annotations"] = [{"id": i + 1, "image_id": 1, "category_id": i + 1, "iscrowd": 0,
                            "segmentation": [[float(v) for p in ring for v in p]], "area": 1.0,
                            "bbox": [0, 0, 1, 1]} for i, (_, ring) in enumerate(SCENE)]
    _json(folder / "annotations.json", data)


def _write_coco_panoptic(folder: Path) -> None:
    _image(folder / "images" / f"{STEM}.png")
    mask = expected_mask()
    label_map = default_label_map()
    segments, ids = [], np.zeros(mask.shape, np.int64)
    for i, (name, _) in enumerate(SCENE):
        segment_id = 1000 + i
        ids[mask == label_map.id_of(name)] = segment_id
        segments.append({"id": segment_id, "category_id": i + 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]})
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    (folder / "panoptic").mkdir(exist_ok=True)
    Image.fromarray(rgb).save(folder / "panoptic" / f"{STEM}.png")
    data = _coco_base()
    data["annotations"] = [{"image_id": 1, "file_name": f"{STEM}.png", "segments_info": segments}]
    _json(folder / "panoptic.json", data)


def _write_cvat(folder: Path) -> None:
    _image(folder / "images" / f"{STEM}.png")
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    image = ET.SubElement(root, "image", id="0", name=f"{STEM}.png", width=str(WIDTH), height=str(HEIGHT))
    for name, ring in SCENE:
        ET.SubElement(image, "polygon", label=name, occluded="0", z_order="0",
                      points=";".join(f"{x:.2f},{y:.2f}" for x, y in ring))
    _xml(folder / "annotations.xml", root)


def _write_labelbox(folder: Path) -> None:
    _image(folder / f"{STEM}.png")
    objects = [{"feature_id": f"f{i}", "name": name, "annotation_kind": "ImagePolygon",
                "polygon": [{"x": x, "y": y} for x, y in ring]} for i, (name, ring) in enumerate(SCENE)]
    row = {"data_row": {"id": "row1", "external_id": f"{STEM}.png", "row_data": f"https://example.com/{STEM}.png"},
           "media_attributes": {"height": HEIGHT, "width": WIDTH, "mime_type": "image/png"},
           "projects": {"proj1": {"name": "streets", "labels": [{"label_kind": "Default", "annotations": {
               "objects": objects, "classifications": [], "relationships": []}}]}}}
    (folder / "export.ndjson").write_text(json.dumps(row) + "\n")


def _write_cityscapes(folder: Path) -> None:
    _image(folder / "leftImg8bit" / "train" / "town" / f"{STEM}_leftImg8bit.png")
    objects = [{"label": name, "polygon": [list(p) for p in ring], "deleted": 0} for name, ring in SCENE]
    _json(folder / "gtFine" / "train" / "town" / f"{STEM}_gtFine_polygons.json",
          {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects})


def _write_mapillary(folder: Path) -> None:
    _image(folder / "train" / "images" / f"{STEM}.jpg", "JPEG")
    objects = [{"id": i, "label": name, "polygon": [list(p) for p in ring]} for i, (name, ring) in enumerate(SCENE)]
    _json(folder / "train" / "v2.0" / "polygons" / f"{STEM}.json",
          {"width": WIDTH, "height": HEIGHT, "objects": objects})


def _write_masks(folder: Path) -> None:
    _image(folder / "images" / f"{STEM}.png")
    (folder / "masks").mkdir(exist_ok=True)
    Image.fromarray(expected_mask(), mode="L").save(folder / "masks" / f"{STEM}.png")
