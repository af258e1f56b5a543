"""`python -m raywave` runs the CLI."""

from raywave.cli import main

if __name__ == "__main__":
    main()
