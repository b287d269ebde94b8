"""Config checks that need the reporting layer, which the domain's `experiment.check` may not
import: the Snakefile runs them before any job (so `snakemake -n` already fails), the CLI after
loading a config."""

from lorarepro.config import ConfigError


def check_reporting(config: dict) -> None:
    """No claim or table average mixes metrics on different scales (lorarepro.reporting.claims.check_measures);
    every figure names a registered drawer: its `kind`, by default its id (lorarepro.reporting.figures.FIGURES)."""
    from lorarepro.reporting.claims import check_measures  # deferred: pandas, scipy

    check_measures(config)
    figures = config.get("figures") or []
    if not figures:
        return
    from lorarepro.reporting.figures import FIGURES  # deferred: matplotlib, only when figures are configured

    for spec in figures:
        kind = spec.get("kind", spec["id"])
        if kind not in FIGURES:
            key = f"figures.{spec['id']}.kind" if "kind" in spec else f"figures.{spec['id']}"
            raise ConfigError(f"config key '{key}': no figure kind '{kind}' (known: {sorted(FIGURES)}); a figure is "
                              "drawn by its `kind`, which defaults to its id")
