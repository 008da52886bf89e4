"""NesyCD (Liao et al., AAAI 2025): its settings (settings.py), stages (stages.py) and the
methods built on its knowledge base (method.py: std-cot+kb, nesycd, nesycd-no-kb, kard)."""
