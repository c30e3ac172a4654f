"""python -m helpers.data convert SRC --to coco|yolo|voc DST [--skip-bad]: a dataset folder (VOC,
COCO or YOLO, told from its layout) rewritten in another format, images copied."""

from __future__ import annotations

import argparse
import sys

from helpers.data.convert import convert
from helpers.data.formats import FORMATS
from helpers.data.records import AnnotationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("convert", help="rewrite a dataset in another format")
    command.add_argument("src", metavar="SRC", help="a dataset folder: VOC, COCO or YOLO")
    command.add_argument("--to", required=True, choices=FORMATS)
    command.add_argument("dst", metavar="DST", help="a new (or empty) folder")
    command.add_argument("--skip-bad", action="store_true", help="leave out bad images and labels, and list them")
    args = parser.parse_args(argv)
    try:
        data = convert(args.src, args.to, args.dst, args.skip_bad)
    except (AnnotationError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in data.notes():
        print(note, file=sys.stderr)
    boxes = sum(len(r.boxes) for r in data.records)
    print(
        f"{args.dst}: {len(data.records)} images, {boxes} boxes, classes {list(data.classes)} ({data.format} -> {args.to})"
    )
    return 0


def convert_command(argv: list[str]) -> int:
    """`python -m helpers convert ...`: the same as `python -m helpers.data convert ...`."""
    return main(["convert", *argv])


if __name__ == "__main__":
    raise SystemExit(main())
