"""The label schema that travels with the data: class ids, names, colours, aliases, the ignore id and the fill id.

JSON shape (written by us, read from users):
    {"classes": [{"id": 3, "name": "road", "color": [128, 64, 128], "aliases": ["street"]}, ...],
     "ignore_id": 255, "fill_id": 0}
Ids run 0..K-1 without gaps and stay below the ignore id; names are lowercase snake_case; `fill_id` is the class
of pixels that no shape covers. For an export's masks whose pixel values are not the class ids (a binary mask of 0
and 255, ids 0, 3 and 7, 0 for void), a class may list the `"values"` that stand for it, and `"ignore_values"` the
values that stand for no class (default: 255 and the ignore id, but for a value a class lists); only mask readers
look at them (`value_table`), since the masks this package writes hold the ids. Likewise `"ignore_colors"`, a list
of [r, g, b], names the colours of an export's RGB masks that stand for no class (default: white, unless a class
has it), such as CamVid's black void in its own colour masks: "ignore_colors": [[0, 0, 0]].
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import io
import json
import re
import unicodedata
from pathlib import Path

import numpy as np

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# Colours the pictures (visualize.py) keep for themselves, which a class's colour should not look like.
IGNORE_GREY = (205, 205, 205)   # pixels that count nowhere: not the white around pictures, not a dimmed pixel
ERROR_COLOR = (255, 40, 90)     # wrong pixels in error maps; ignored ones IGNORE_GREY: lighter than any dimmed pixel
_RESERVED = (("the grey of ignored pixels", IGNORE_GREY), ("the red of wrong pixels in error maps", ERROR_COLOR))
_ALIKE = 30                     # RGB distance under which two swatches read as one colour


class LabelMapError(ValueError):
    """A label map that cannot be used, with a message saying what is wrong."""


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]
    aliases: tuple[str, ...] = ()
    values: tuple[int, ...] = ()     # the pixel values an export's masks use for it; () for its id


@dataclasses.dataclass(frozen=True)
class LabelMap:
    classes: tuple[ClassInfo, ...]
    ignore_id: int = 255
    fill_id: int = 0
    ignore_values: tuple[int, ...] | None = None     # mask values that stand for no class; None: 255, the ignore id
    ignore_colors: tuple[tuple[int, int, int], ...] | None = None    # RGB masks' colours of no class; None: white

    def __post_init__(self):
        _validate(self)

    # --- lookups -------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def id_of(self, source_name: str) -> int | None:
        """Class id for a name as a labelling tool wrote it (name or alias, any case); None when unknown."""
        return self._lookup.get(_normalise(source_name))

    def tool_name(self, class_id: int) -> str:
        """The class's name as the labelling tool spelt it, for the polygons written back to it: the first alias
        that spells the name's words otherwise ('Road Surface' of road_surface, as `labels classes` keeps it; a
        CVAT task refuses labels it does not have) or stands for a name of no Latin letter (木 of class_3), else
        the name. Synonyms (street of road) and markers (LabelMe's _background_) are no spellings of it."""
        c = self.classes[class_id]
        for alias in c.aliases:
            if alias[:1] != "_" and alias[-1:] != "_" and (
                    snake_case(alias) == c.name or
                    (not snake_case(alias) and c.name in (f"class_{c.id}", f"unnamed_{c.id}"))):
                return alias
        return c.name

    def colour_clashes(self) -> list[str]:
        """Classes whose colours the pictures (overlays, legends, reports) cannot tell apart: one another's, or the
        grey of ignored pixels and the red of wrong ones."""
        named = [(f"class {c.name!r}", c.color) for c in self.classes] + list(_RESERVED)
        return [f"{first} {list(a)} and {second} {list(b)} look alike in pictures: give one another colour in the "
                "label map" for i, (first, a) in enumerate(named[:self.num_classes])
                for second, b in named[i + 1:] if _alike(a, b)]

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colours indexed by class id; the ignore id is white, unused entries black."""
        pal = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            pal[c.id] = c.color
        pal[self.ignore_id] = (255, 255, 255)
        return pal

    def value_table(self) -> np.ndarray:
        """(65536,) int32: the class id (or the ignore id) each pixel value of an export's mask stands for, -1 for
        a value that stands for nothing (`values`, `ignore_values`)."""
        table = np.full(1 << 16, -1, np.int32)
        table[list(self.mask_ignore_values())] = self.ignore_id
        for c in self.classes:
            table[list(c.values or (c.id,))] = c.id
        return table

    def of_ids(self) -> "LabelMap":
        """This label map for masks that hold the class ids (a dataset's, a model's, the masks we write): without
        the `values` and `ignore_values` of an export's masks, so that one taxonomy is one label map however its
        exports stored it."""
        return dataclasses.replace(self, classes=tuple(dataclasses.replace(c, values=()) for c in self.classes),
                                   ignore_values=None, ignore_colors=None)

    def mask_ignore_values(self) -> tuple[int, ...]:
        """The values of an export's masks that stand for no class: `ignore_values`, else 255 and the ignore id
        (those no class lists)."""
        if self.ignore_values is not None:
            return self.ignore_values
        claimed = {v for c in self.classes for v in c.values}
        return tuple(sorted({255, self.ignore_id} - claimed))

    def mask_ignore_colors(self) -> tuple[tuple[int, int, int], ...]:
        """The colours of an export's RGB masks that stand for no class: `ignore_colors`, else white where no class
        has it."""
        if self.ignore_colors is not None:
            return self.ignore_colors
        return () if any(c.color == (255, 255, 255) for c in self.classes) else ((255, 255, 255),)

    @functools.cached_property
    def _lookup(self) -> dict[str, int]:
        table = {}
        for c in self.classes:
            for key in (c.name, *c.aliases):
                table[_normalise(key)] = c.id
        return table

    # --- (de)serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON shape; `values`, `ignore_values` and `ignore_colors` only where given (label maps without them
        read, and fingerprint a build, as before)."""
        data = {
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "aliases": list(c.aliases),
                         **({"values": list(c.values)} if c.values else {})} for c in self.classes],
            "ignore_id": self.ignore_id,
            "fill_id": self.fill_id,
        }
        if self.ignore_values is not None:
            data["ignore_values"] = list(self.ignore_values)
        if self.ignore_colors is not None:
            data["ignore_colors"] = [list(colour) for colour in self.ignore_colors]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, source: str = "label map") -> "LabelMap":
        try:
            _known_keys(data, MAP_KEYS, "a label map's", "")       # a misspelt key was left out silently
            classes = tuple(_class_from_dict(c) for c in data["classes"])
            ignore_values, ignore_colors = data.get("ignore_values"), data.get("ignore_colors")
            return cls(classes, _integer(data.get("ignore_id", 255), "ignore_id"),
                       _integer(data.get("fill_id", 0), "fill_id"),
                       None if ignore_values is None else _values(ignore_values, "ignore_values"),
                       None if ignore_colors is None else _colours(ignore_colors, "ignore_colors"))
        except LabelMapError as e:
            raise LabelMapError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LabelMapError(f"{source}: malformed label map ({type(e).__name__}: {e}); expected "
                                '{"classes": [{"id": 0, "name": "road", "color": [r, g, b]}, ...], '
                                '"ignore_id": 255, "fill_id": 0}') from None

    @classmethod
    def from_json(cls, text: str, source: str = "label map") -> "LabelMap":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelMapError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise LabelMapError(f"{source}: the top level must be a JSON object with a 'classes' list")
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "LabelMap":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")     # Notepad writes a BOM
        except OSError as e:
            raise LabelMapError(f"cannot read label map {path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise LabelMapError(f"label map {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        if path.suffix.lower() == ".csv":
            return from_class_csv(text, str(path))
        if path.suffix.lower() == ".txt" and not text.lstrip().startswith("{"):     # a JSON map named .txt reads
            return from_voc_labelmap(text, str(path))
        return cls.from_json(text, str(path))


def _normalise(name: str) -> str:
    return " ".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def _integer(value, what: str) -> int:
    """A JSON whole number (1 or 1.0); anything else (1.7, "2", true) is refused rather than rounded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise LabelMapError(f"{what} must be a whole number, got {value!r}")
    return int(value)


MAP_KEYS = ("classes", "ignore_id", "fill_id", "ignore_values", "ignore_colors")
CLASS_KEYS = ("id", "name", "color", "aliases", "values")


def _known_keys(data: dict, known: tuple[str, ...], whose: str, where: str) -> None:
    """A LabelMapError for a key that is a misspelling of a known one; keys of other uses (a "_comment", another
    tool's "supercategory") are left alone."""
    for key in data:
        close = [] if key in known else difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if close:
            raise LabelMapError(f"{where}unknown key {key!r} (did you mean {close[0]!r}?); {whose} keys are "
                                f"{', '.join(known)}")


def _class_from_dict(c: dict) -> ClassInfo:
    _known_keys(c, CLASS_KEYS, "a class's", f"class {c.get('name')!r}: ")
    color = _colour(c["color"], f"class {c.get('name')!r}: color")
    aliases = c.get("aliases", [])
    if isinstance(aliases, str) or not all(isinstance(a, str) for a in aliases):
        raise LabelMapError(f"class {c.get('name')!r}: aliases must be a list of strings")
    return ClassInfo(_integer(c["id"], f"class {c.get('name')!r}: id"), str(c["name"]), color, tuple(aliases),
                     _values(c.get("values", []), f"class {c.get('name')!r}: values"))


def _colour(colour, what: str) -> tuple[int, int, int]:
    """[r, g, b]: three whole numbers 0..255."""
    if not isinstance(colour, (list, tuple)):
        raise LabelMapError(f"{what} must be a list of three integers 0..255, [r, g, b], got {colour!r}")
    rgb = tuple(_integer(v, what) for v in colour)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise LabelMapError(f"{what} must be three integers 0..255, got {list(colour)}")
    return rgb


def _colours(colours, what: str) -> tuple[tuple[int, int, int], ...]:
    """A list of [r, g, b] colours."""
    if not isinstance(colours, list):
        raise LabelMapError(f"{what} must be a list of [r, g, b] colours, e.g. [[0, 0, 0]], got {colours!r}")
    return tuple(_colour(colour, f"{what}: {colour!r}") for colour in colours)


def _values(values, what: str) -> tuple[int, ...]:
    """Mask pixel values: a list of whole numbers 0..65535 (16-bit masks)."""
    if not isinstance(values, list):
        raise LabelMapError(f"{what} must be a list of pixel values, got {values!r}")
    values = tuple(_integer(v, what) for v in values)
    if not all(0 <= v < 1 << 16 for v in values):
        raise LabelMapError(f"{what} must be pixel values 0..65535, got {list(values)}")
    return values


def _validate_values(lm: LabelMap) -> None:
    """No mask value stands for two classes, or for a class and for none."""
    owner: dict[int, str] = {}
    for c in lm.classes:
        for v in c.values or (c.id,):
            if owner.setdefault(v, c.name) != c.name:
                raise LabelMapError(f"mask value {v} stands for both {owner[v]!r} and {c.name!r} (a class without "
                                    "values stands for its id)")
    both = sorted(set(owner) & set(lm.ignore_values or ()))
    if both:
        raise LabelMapError(f"mask value {both[0]} stands for {owner[both[0]]!r} and is in ignore_values too "
                            "(ignore_values are values of greyscale and palette masks; the colours of RGB masks "
                            "that stand for no class are \"ignore_colors\", e.g. [[0, 0, 0]])")
    coloured = {c.color: c.name for c in lm.classes}
    both = [colour for colour in lm.ignore_colors or () if colour in coloured]
    if both:
        raise LabelMapError(f"colour {list(both[0])} is the colour of class {coloured[both[0]]!r} and in "
                            "ignore_colors too: give the class another colour, or leave the colour out")


def _validate(lm: LabelMap) -> None:
    if not lm.classes:
        raise LabelMapError("no classes")
    if len(lm.classes) > 255:
        raise LabelMapError(f"{len(lm.classes)} classes: a mask holds 255 at most (ids 0..254, and 255 for the ignore "
                            "id)")
    ids = sorted(c.id for c in lm.classes)
    if ids != list(range(len(ids))):
        raise LabelMapError(f"class ids must run 0..{len(ids) - 1} without gaps or repeats, got {ids}")
    if not 0 <= lm.ignore_id <= 255 or lm.ignore_id < len(ids):
        raise LabelMapError(f"ignore_id {lm.ignore_id} must be in {len(ids)}..255 (above every class id)")
    if not 0 <= lm.fill_id < len(ids) and lm.fill_id != lm.ignore_id:
        raise LabelMapError(f"fill_id {lm.fill_id} is neither a class id nor the ignore id")
    for c in lm.classes:
        if not _SNAKE.match(c.name):
            spelt = snake_case(c.name) or "class_name_in_ascii"         # none for a name of no Latin letter
            raise LabelMapError(f"class name {c.name!r} must be lowercase snake_case (like 'sign_symbol'): name it "
                                f"{spelt!r} and keep the tool's spelling as an alias, "
                                f'{{"name": "{spelt}", "aliases": [{json.dumps(c.name, ensure_ascii=False)}], ...}}')
    seen: dict[str, ClassInfo] = {}
    for c in lm.classes:
        for key in (c.name, *c.aliases):
            owner = seen.setdefault(_normalise(key), c)
            if owner.id != c.id:
                raise LabelMapError(f"name or alias {key!r} is used by both class {owner.id} ({owner.name!r}) and "
                                    f"class {c.id} ({c.name!r})")
    _validate_values(lm)
    if len(lm.classes) < 2:
        raise LabelMapError(f"one class ({lm.classes[0].name!r}): a label map needs 2 at least, since a model that can "
                            "answer only one class learns nothing (its loss is 0, its mIoU 1); add a 'background' "
                            "class for what is not it, and make it the fill_id")
    if lm.classes != tuple(sorted(lm.classes, key=lambda c: c.id)):
        object.__setattr__(lm, "classes", tuple(sorted(lm.classes, key=lambda c: c.id)))


def _seed_classes() -> tuple[ClassInfo, ...]:
    return (
        ClassInfo(0, "background", (0, 0, 0), ("_background_", "unlabeled", "unlabelled", "other")),
        ClassInfo(1, "tree", (34, 139, 34), ("trees", "vegetation")),
        ClassInfo(2, "landscaping", (152, 251, 152), ("grass", "lawn", "terrain")),
        ClassInfo(3, "road", (128, 64, 128), ("street", "roadway")),
        ClassInfo(4, "sidewalk", (244, 35, 232), ("pavement", "footpath")),
        ClassInfo(5, "building", (70, 70, 70), ("buildings", "house")),
        ClassInfo(6, "sky", (70, 130, 180), ()),
        ClassInfo(7, "concrete", (190, 153, 153), ("bridge", "barrier", "median", "wall")),
    )


EXPORT_LABEL_MAP = "label_map.json"     # written into predict's --export folders, read from an export's top
ROBOFLOW_CLASSES = "_classes.csv"       # Roboflow's semantic-segmentation export: one in each split folder
VOC_LABELMAP = "labelmap.txt"           # CVAT's Segmentation mask and Datumaro's VOC exports, at their top
CLASS_NAMES = "class_names.txt"         # labelme2voc's output folder, at its top
LABELME_LABELS = "labels.txt"           # labelme2voc's input class list: beside the LabelMe files, or above them


def label_map_of_export(export: Path) -> Path | None:
    """The label map an export brings: label_map.json at its top where it is ours (predict --export writes the run's,
    so that its polygons, corrected in the tool, come back with their classes), else the class list of its masks:
    CVAT's labelmap.txt or labelme2voc's class_names.txt at its top, or Roboflow's _classes.csv there or in its split
    folders, or above its mask folder where that is `export` (a list that does not read is still the export's, and
    loading it says why), else the label_map.json of a folder in it (predict's OUT holds its export in OUT/labelme/),
    else labelme2voc's labels.txt beside it or one folder up (labelme_labels: `labels classes` numbers the classes by
    it too; one folder up, it is farther than a label map of ours below). LabelMapError
    where two split folders' lists differ (each folder's masks hold the ids of its own), or two folders' label maps.
    The folder is the export's, or the one of an export file."""
    folder = Path(export) if Path(export).is_dir() else Path(export).parent
    if _is_our_label_map(folder / EXPORT_LABEL_MAP):
        return folder / EXPORT_LABEL_MAP
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    from streetseg_jax.labels.formats.masks import MASK_DIRS      # here: a label map alone needs no image library
    above = [folder.parent / VOC_LABELMAP, folder.parent / CLASS_NAMES] if folder.name in MASK_DIRS else []
    lists = [path for path in (folder / VOC_LABELMAP, folder / CLASS_NAMES, *above,        # --input a mask folder
                               *(p / ROBOFLOW_CLASSES for p in (folder, *subfolders))) if path.is_file()]
    csvs = [path for path in lists if path.name == ROBOFLOW_CLASSES]
    if len(csvs) > 1 and lists[0] in csvs:
        readings = {path: LabelMap.load(path) for path in csvs}
        first = readings[csvs[0]]
        other = next((path for path, read in readings.items() if read != first), None)
        if other is not None:
            raise LabelMapError(f"{csvs[0]} and {other} list different classes ({', '.join(first.names)} against "
                                f"{', '.join(readings[other].names)}), and each folder's masks hold the ids of its "
                                "own: make the lists one (and the masks with them), or build the folders apart")
    return lists[0] if lists else _label_map_below(subfolders) or labelme_labels(folder)


def labelme_labels(folder: Path) -> Path | None:
    """labelme2voc's labels.txt in `folder` or the one above it (LabelMe's own example keeps it beside
    data_annotated/). labelme2voc numbers the classes by it, _background_ 0 and the next ones 1, 2 ...; a file is
    such a list where it names _background_ or starts with __ignore__."""
    for path in (folder / LABELME_LABELS, folder.parent / LABELME_LABELS):
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError):
            continue
        if "_background_" in names or names[:1] == ["__ignore__"]:
            return path
    return None


def _label_map_below(subfolders: list[Path]) -> Path | None:
    """The label map of ours in the folders given (predict's OUT/labelme/label_map.json), where they hold one or
    several alike; LabelMapError where they differ."""
    found = [path for path in (p / EXPORT_LABEL_MAP for p in subfolders) if _is_our_label_map(path)]
    differ = [path for path in found[1:] if path.read_bytes() != found[0].read_bytes()]
    if differ:
        raise LabelMapError(f"{found[0]} and {differ[0]} differ: give --input the one export folder, or --label_map")
    return found[0] if found else None


def _is_our_label_map(path: Path) -> bool:
    """Whether `path` is a label map of ours: a JSON object with a 'classes' list, loading or not (a broken one is
    still the export's, and loading it says why); another tool's label_map.json is not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("classes"), list)


_IGNORE_NAMES = {"ignore", "ignored", "__ignore__", "void", "unlabeled", "unlabelled", "none"}


def from_class_csv(text: str, source: str = "class list") -> LabelMap:
    """Roboflow's `_classes.csv` (a `Pixel Value, Class` header, then `0, background`, `1, road` ...): a class per
    line in the order of the pixel values, the first the fill class, as in starter_label_map; a class whose pixel
    value is not its id (values with gaps, `255, crack`) lists it in its `values`. Columns after the second are left
    out, and so are lines of a negative value, or of 255 named as no class (ignore, void, unlabeled ...)."""
    rows = [[cell.strip() for cell in row[:2]] for row in csv.reader(io.StringIO(text), skipinitialspace=True)
            if any(cell.strip() for cell in row)]
    rows = [row for row in rows if not re.fullmatch(r"-\d+", row[0])
            and not (row[0] == "255" and len(row) > 1 and _normalise(row[1]) in _IGNORE_NAMES)]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if rows and header[:1] != ["pixel value"] and header[0].isdigit():
        rows.insert(0, ["Pixel Value", "Class"])                   # the header left out: the lines say enough
    elif header != ["pixel value", "class"]:
        raise LabelMapError(f"{source}: expected a 'Pixel Value, Class' header line (Roboflow's _classes.csv), got "
                            f"{rows[0] if rows else 'an empty file'}")
    try:
        by_value = {int(value): name for value, name in rows[1:]}
    except ValueError:
        raise LabelMapError(f"{source}: each line after the header must be 'pixel value, class name', as "
                            "'1, road'") from None
    if len(by_value) < len(rows) - 1:
        raise LabelMapError(f"{source}: a pixel value is named twice in {[int(row[0]) for row in rows[1:]]}; write a "
                            "label map by hand (labels classes --output starts one)")
    values = sorted(by_value)
    try:
        starter = starter_label_map([by_value[v] for v in values], keep_ids=True)
        classes = tuple(dataclasses.replace(c, values=() if v == c.id else (v,))
                        for c, v in zip(starter.classes, values))
        return dataclasses.replace(starter, classes=classes)
    except LabelMapError as e:
        raise LabelMapError(f"{source}: {e}") from None


def from_voc_labelmap(text: str, source: str = "labelmap.txt") -> LabelMap:
    """CVAT's and Datumaro's labelmap.txt (`# label:color_rgb:parts:actions`, then `background:0,0,0::`,
    `road:128,64,128::` ...): each line's position is the class id (a paletted mask's index), the first the fill
    class (as in starter_label_map); its colour is the class's (an RGB mask's), or PASCAL VOC's where none is given.
    labelme2voc's labels.txt and class_names.txt (names alone, `__ignore__` first in the one) read so too."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#") and line.strip() != "__ignore__"]
    if not lines:
        raise LabelMapError(f"{source}: no classes (expected lines of 'name:r,g,b::', as CVAT writes them)")
    colours = []
    for line in lines:
        fields = line.split(":")
        try:
            colour = tuple(int(v) for v in fields[1].split(",")) if len(fields) > 1 and fields[1].strip() else None
        except ValueError:
            colour = ()
        if colour is not None and (len(colour) != 3 or not all(0 <= v <= 255 for v in colour)):
            raise LabelMapError(f"{source}: {line!r}: expected 'name:r,g,b::' with three values 0..255")
        colours.append(colour or voc_color(len(colours)))
    try:
        listed = starter_label_map([line.split(":")[0].strip() for line in lines], keep_ids=True)
    except LabelMapError as e:
        raise LabelMapError(f"{source}: {e}") from None
    return LabelMap(tuple(dataclasses.replace(c, color=colour) for c, colour in zip(listed.classes, colours)),
                    ignore_id=listed.ignore_id, fill_id=listed.fill_id)


def default_label_map() -> LabelMap:
    """The seed's 8 classes: 0 background, 1 tree, 2 landscaping, 3 road, 4 sidewalk, 5 building, 6 sky, 7 concrete."""
    return LabelMap(_seed_classes())


def snake_case(name: str) -> str:
    """A class name as the label map spells it ('Traffic Light' -> 'traffic_light', '_background_' ->
    'background'); '' where no letter or digit is left."""
    ascii_name = unicodedata.normalize("NFKD", str(name).casefold()).encode("ascii", "ignore").decode()  # ß: ss
    snake = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    return f"class_{snake}" if snake[:1].isdigit() else snake


def starter_label_map(names: list[str], keep_ids: bool = False) -> LabelMap:
    """A label map of an export's own class names, in the order given: class 0 'background' is the fill class (with
    the tool's spellings of it, such as LabelMe's '_background_', as aliases), then one class per other name,
    spelt in snake_case, with the tool's spellings as aliases ('Traffic Light' and 'traffic-light' are one class,
    traffic_light). `keep_ids` (a tool's class list: labelme2voc's labels.txt, Roboflow's _classes.csv): each name
    is a class of its own at its position, the first the fill class, named 'background' only where it is a spelling
    of it; LabelMapError where two of them are one snake_case name. A name of no Latin letter or digit (木) becomes
    class_<its id>, the tool's spelling its alias. Colours: the seed's for the seed's class names,
    else distinct ones from the PASCAL VOC palette. LabelMapError where the names are more than the 255 classes a
    mask holds."""
    seed = default_label_map()
    groups: dict[str, list[str]] = {}
    for i, name in enumerate(names):         # 'other' is a class of its own, not the seed's background
        background = seed.id_of(name) == 0 and snake_case(name) != "other" and (i == 0 or not keep_ids)
        groups.setdefault("background" if background else snake_case(name) or f"\0{i}", []).append(name)
    if keep_ids and len(groups) < len(names):
        twice = [spelt for spelt, spellings in groups.items() if len(spellings) > 1]
        raise LabelMapError(f"the class list names {', '.join(map(repr, groups[twice[0]]))}, one class "
                            f"{twice[0]!r} here: merge them in the list, or write the label map by hand")
    order = list(groups) if keep_ids else ["background", *(spelt for spelt in groups if spelt != "background")]
    classes, used = [], set()
    for spelt in order:
        spellings = groups.get(spelt, [])
        if spelt.startswith("\0"):                 # no Latin letter or digit (木, !!): named by its class id
            spelt = f"class_{len(classes)}" if f"class_{len(classes)}" not in groups else f"unnamed_{len(classes)}"
        known = 0 if spelt == "background" else seed.id_of(spellings[0]) or None    # 'other' is not background
        color = voc_color(len(classes)) if known is None else seed.classes[known].color
        taken = lambda c: any(_alike(c, other) for other in (*used, *(rgb for _, rgb in _RESERVED)))  # noqa: E731
        if taken(color):                                        # 'Vegetation' and 'tree' are both the seed's tree
            color = next(c for c in map(voc_color, range(len(classes), 1 << 24)) if not taken(c))
        used.add(color)
        classes.append(ClassInfo(len(classes), spelt, color, tuple(n for n in spellings if n != spelt)))
    return LabelMap(tuple(classes), ignore_id=255, fill_id=0)


def starter_of_values(values: list[int]) -> LabelMap:
    """A label map to start from for masks that hold the pixel `values` (greyscale or palette masks that came with
    no label map): class_<value> for each, ids 0..N-1 in their order, the first the fill class; a class whose value
    is not its id lists it in its `values`. 255 stands for no class, as masks are read without a label map's word,
    unless fewer than 2 other values are found (a binary mask of 0 and 255). `ignore_values` is written, so that a
    palette mask is read by its indices, the values listed, and not by its colours."""
    named = [v for v in values if v != 255]
    named = named if len(named) >= 2 else list(values)
    starter = starter_label_map([f"class_{v}" for v in named], keep_ids=True)
    classes = tuple(dataclasses.replace(c, values=() if v == c.id else (v,)) for c, v in zip(starter.classes, named))
    return dataclasses.replace(starter, classes=classes, ignore_values=() if 255 in named else (255,))


def starter_of_colours(colours: list[tuple[int, int, int]]) -> LabelMap:
    """A label map to start from for RGB masks that hold `colours` (with no label map): class_<id> for each, ids
    0..N-1 in the order given, the first the fill class, each in its colour. White stands for no class, as masks
    are read, unless fewer than 2 other colours are found (a black-and-white mask)."""
    colours = [tuple(c) for c in colours]
    named = [c for c in colours if c != (255, 255, 255)]
    named = named if len(named) >= 2 else colours
    return LabelMap(tuple(ClassInfo(i, f"class_{i}", colour) for i, colour in enumerate(named)))


def same_classes(old: dict, new: dict) -> bool:
    """Whether two label maps (to_dict's shape) give every id the same class and ignore the same id: what a model's
    outputs and its scores mean. Their colours, aliases, fill id and mask values only say how exports are read
    into masks (the data, which its fingerprint covers) and how pictures are drawn."""
    return _names(old) == _names(new) and old.get("ignore_id") == new.get("ignore_id")


def label_map_change(old: dict, new: dict) -> str:
    """What differs between two label maps (to_dict's shape), in words: the classes by name, else the ignore id,
    else each detail that only reading exports and drawing pictures use ("class 'track' gained alias 'truck'")."""
    if _names(old) != _names(new):
        return f"classes {', '.join(_names(old))} before, {', '.join(_names(new))} now"
    if old.get("ignore_id") != new.get("ignore_id"):
        return f"ignore id {old.get('ignore_id')} before, {new.get('ignore_id')} now"
    return "; ".join(_class_changes(old, new) + _map_changes(old, new)) or "the order of a class's aliases or values"


def _names(label_map: dict) -> list:
    return [c.get("name") for c in label_map.get("classes", [])]


def _class_changes(old: dict, new: dict) -> list[str]:
    """Each class's gained and lost aliases and mask values, and its colour change (the same classes in both)."""
    found = []
    for then, now in zip(old.get("classes", []), new.get("classes", [])):
        name = now.get("name")
        for key, what in (("aliases", "alias"), ("values", "mask value")):
            before, after = then.get(key, []), now.get(key, [])
            found += [f"class {name!r} gained {what} {x!r}" for x in after if x not in before]
            found += [f"class {name!r} lost {what} {x!r}" for x in before if x not in after]
        if then.get("color") != now.get("color"):
            found.append(f"class {name!r}: colour {then.get('color')} before, {now.get('color')} now")
    return found


def _map_changes(old: dict, new: dict) -> list[str]:
    return [f"{key} {old.get(key, 'not given')} before, {new.get(key, 'not given')} now"
            for key in ("fill_id", "ignore_values", "ignore_colors") if old.get(key) != new.get(key)]


def _alike(a, b) -> bool:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float))) < _ALIKE


def voc_color(index: int) -> tuple[int, int, int]:
    """PASCAL VOC's colour for class `index`: its bits spread over the high bits of red, green and blue."""
    rgb = [0, 0, 0]
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return tuple(rgb)


def class_id_array(mask, num_classes: int, ignore_id: int, what: str = "the mask") -> np.ndarray:
    """`mask` as a numpy array of class ids (0..num_classes-1) and `ignore_id`, of whole numbers (an integer or bool
    dtype); else a ValueError that names the dtype or the stray values. A float mask was cut to whole numbers, and a
    value of no class counted nowhere (a score too high) or drawn untinted, without a word."""
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biu":
        raise ValueError(f"{what} must hold class ids, whole numbers, got {mask.dtype} values"
                         + (f" {np.nanmin(mask)}..{np.nanmax(mask)}" if mask.dtype.kind == "f" and
                            np.isfinite(mask).any() else "")
                         + " (a float mask would be cut to whole numbers: pass the ids, e.g. an argmax)")
    strays = np.unique(mask[((mask < 0) | (mask >= num_classes)) & (mask != ignore_id)])
    if strays.size:
        shown = ", ".join(map(str, strays[:8].tolist())) + (", ..." if strays.size > 8 else "")
        raise ValueError(f"values {shown} in {what} are no class id (0..{num_classes - 1}) nor the ignore id "
                         f"{ignore_id}: map an export's values to class ids with LabelMap.value_table() "
                         "(streetseg_jax.labels.label_map), or pass the ignore id the mask uses")
    return mask
