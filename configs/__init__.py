"""One ml_collections config per training stage; ``--config=NAME`` resolves to ``configs/NAME.py``."""
