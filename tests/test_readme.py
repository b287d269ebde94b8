"""The README cannot go stale where a test can see it: its Layout names every benchmark, every config
of workflow/configs, every top-level module and package of src/lorarepro and the architecture page;
it opens with exactly two commands, the first the one CI runs, the second the tests."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _layout() -> str:
    section = README.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```\n(.+?)\n```", section, re.S).group(1)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_.\-]*", text))


def test_layout_names_every_benchmark_config_and_module():
    words = _words(_layout().replace("{", " ").replace("}", " ").replace(",", " ").replace("/", " "))
    expected = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    expected |= {p.stem for p in (REPO / "workflow" / "configs").glob("*.yaml")}
    package = REPO / "src" / "lorarepro"
    expected |= {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    expected |= {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    expected |= {"architecture.md"}
    assert sorted(expected - words) == []


def test_readme_opens_with_the_run_and_the_test_command():
    blocks = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    assert "snakemake --cores 2" in blocks[0] and "pytest" in blocks[1]
    assert README.index("<!-- test-command -->") < README.index(blocks[1])
