"""`python -m jobkit`: the `jobkit` command where its script is not on PATH (pip --user, venvs
not activated) or not beside the interpreter."""

from jobkit.cli import main

if __name__ == "__main__":
    main()
