"""Reporting: what the run records say, as the paper's tables (`tables`), figures (`figures`),
significance and flatness statistics (`stats`), cost columns (`cost`) and report captions
(`captions`). It reads run records only; nothing here trains or loads a model."""
