"""Dataset tooling: the synthetic Slakh-format renderer and the Slakh2100 -> TFRecord builder."""
