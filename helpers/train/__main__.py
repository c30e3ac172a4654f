"""python -m helpers.train: the same as python -m helpers train."""

from helpers.train.run import main

raise SystemExit(main())
