"""Class id <-> name mapping with background = 0 (torchvision detectors reserve label 0)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

BACKGROUND = "background"


class ClassMap:
    """Ordered class names; id i+1 is `names[i]`, id 0 is background.

    Reads both our JSON form {"classes": [...]} and IceVision's {name: id} form (the blog post's
    class_map.json), and a plain list.
    """

    def __init__(self, names: Iterable[str]):
        self.names: tuple[str, ...] = tuple(names)
        if BACKGROUND in self.names:
            raise ValueError("class names must not include 'background': it is id 0 implicitly")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names: {self.names}")
        if not self.names:
            raise ValueError("a class map needs at least one class")
        self._ids = {name: i + 1 for i, name in enumerate(self.names)}

    @property
    def num_classes(self) -> int:
        """Including background, as torchvision's `num_classes` expects."""
        return len(self.names) + 1

    def id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"unknown class {name!r}; known: {list(self.names)}") from None

    def name(self, class_id: int) -> str:
        if class_id == 0:
            return BACKGROUND
        if not 1 <= class_id <= len(self.names):
            raise KeyError(f"class id {class_id} outside 0..{len(self.names)}")
        return self.names[class_id - 1]

    def to_json(self) -> str:
        return json.dumps({"classes": list(self.names)})

    @classmethod
    def from_obj(cls, obj) -> ClassMap:
        if isinstance(obj, list):
            return cls(n for n in obj if n != BACKGROUND)
        if isinstance(obj, dict) and isinstance(obj.get("classes"), list):
            return cls(obj["classes"])
        if isinstance(obj, dict) and obj and all(isinstance(v, int) for v in obj.values()):
            # IceVision form {name: id}; ids must be 0..n with background at 0.
            by_id = sorted(obj.items(), key=lambda kv: kv[1])
            if [i for _, i in by_id] != list(range(len(by_id))) or by_id[0][0] != BACKGROUND:
                raise ValueError(f"class map ids must be 0..n with background = 0: {obj}")
            return cls(name for name, _ in by_id[1:])
        raise ValueError("class map must be a list, {'classes': [...]} or {name: id}")

    @classmethod
    def from_json(cls, text: str) -> ClassMap:
        return cls.from_obj(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> ClassMap:
        return cls.from_json(Path(path).read_text())

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassMap) and self.names == other.names

    def __repr__(self) -> str:
        return f"ClassMap({list(self.names)})"
