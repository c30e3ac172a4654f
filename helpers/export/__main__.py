"""python -m helpers.export: the same as python -m helpers export."""

from helpers.export.onnx_export import main

raise SystemExit(main())
