"""`python -m fusionmamba_cli` (also what `torchrun -m fusionmamba_cli` runs)."""

from fusionmamba_cli.cli.app import main

if __name__ == "__main__":
    main()
