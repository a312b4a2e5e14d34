"""RECIPES.md and configs/ agree: every experiment config has a row, every row names a config."""

import glob
import os
import re

from tests.test_all_configs import LIBRARIES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first_cells() -> list[str]:
    with open(os.path.join(REPO, "RECIPES.md")) as f:
        rows = [line for line in f if line.startswith("| `configs/")]
    return [row.split("|")[1] for row in rows]


def test_every_config_has_a_row_and_every_row_names_a_config():
    named = {n for cell in _first_cells() for n in re.findall(r"`configs/(\w+)\.py`", cell)}
    files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))}
    assert named - files == set(), "RECIPES.md names configs that do not exist"
    assert files - LIBRARIES - named == set(), "configs missing from RECIPES.md"


def test_reproduced_column_holds_numbers_or_says_not_yet_run():
    with open(os.path.join(REPO, "RECIPES.md")) as f:
        text = f.read()
    for table in text.split("\n\n"):
        lines = [line for line in table.splitlines() if line.startswith("|")]
        if not lines or "reproduced here (full data)" not in lines[0]:
            continue
        column = [c.strip() for c in lines[0].split("|")].index("reproduced here (full data)")
        for line in lines[2:]:
            cell = [c.strip() for c in line.split("|")][column]
            assert cell == "not yet run" or re.fullmatch(r"\d+(\.\d+)?( / \d+(\.\d+)?)?.*", cell), (
                line
            )
