import sys

from fdsl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["eval-linear", *sys.argv[1:]]))
