"""``python -m screen`` runs the same CLI as the ``screen`` console script."""

from screen.cli import main

if __name__ == "__main__":
    main()
