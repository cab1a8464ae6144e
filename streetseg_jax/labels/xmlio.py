"""The one XML parser of every XML reader (VOC, MIT LabelMe, CVAT): defusedxml with DTDs refused, so entity
expansion ("billion laughs") and external entities never run, and every failure is a `LabelFormatError`."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from streetseg_jax.labels.shapes import LabelFormatError


def parse_xml(path: Path) -> ET.Element:
    try:
        return SafeET.parse(path, forbid_dtd=True).getroot()
    except DefusedXmlException as e:
        raise LabelFormatError(f"{path}: refused unsafe XML ({type(e).__name__}: DTDs and entities are not "
                               "allowed)") from None
    except ET.ParseError as e:
        raise LabelFormatError(f"{path}: malformed XML ({e})") from None
    except OSError as e:
        raise LabelFormatError(f"{path}: cannot read ({e.strerror})") from None
