"""The joined loop ``nesycd+fdd`` (method.py): FDD's rounds, then NesyCD on what they made."""
