"""python -m helpers run-all [--full] | benchmark [...] | accuracy [...] | soak [...]"""

import sys


def main() -> int:
    commands = {
        "run-all": "helpers.run_all",
        "benchmark": "helpers.benchmark",
        "accuracy": "helpers.accuracy",
        "soak": "helpers.soak",
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m helpers {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    module = __import__(commands[sys.argv[1]], fromlist=["main"])
    return module.main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
