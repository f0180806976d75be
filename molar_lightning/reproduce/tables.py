"""The paper's tables as data: which rows each table holds, how each row is configured, and the printed figures.

Everything comes from ``paper_tables.yaml`` beside this module, so a figure can be checked against the paper
without reading code, and a new row is a YAML entry, not a code change.
"""

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Optional

import yaml

from molar_lightning.user_error import SettingError

PAPER_TABLES = Path(__file__).with_name("paper_tables.yaml")
ITEM_SIDES = ("none", "text", "image", "image_text", "text_and_image")


@dataclass(frozen=True)
class Row:
    """One row of a paper table and how to run it (see ``paper_tables.yaml``'s header)."""

    key: str
    name: str
    config: str
    items: str
    id_model: Optional[str] = None
    args: tuple[str, ...] = ()
    needs: Optional[str] = None


@dataclass(frozen=True)
class Table:
    """One paper table: its rows in print order, the row the others are tested against, the paper's figures."""

    number: int
    title: str
    base: str
    rows: tuple[str, ...]
    paper: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # data set -> row -> metric -> figure

    def paper_figures(self, data: str, row: str) -> tuple[Optional[str], dict[str, float]]:
        """``(data set, figures)`` the paper prints for ``row``: on ``data`` when the table has it, else on the
        one data set it has (Tables 3-6 are PixelRec only), else ``(None, {})``."""
        if data in self.paper:
            return data, self.paper[data].get(row, {})
        if len(self.paper) == 1:
            (only, rows), = self.paper.items()
            return only, rows.get(row, {})
        return None, {}


@cache
def paper_tables() -> tuple[dict[str, Row], dict[int, Table]]:
    """The rows and tables of ``paper_tables.yaml``, checked for consistency."""
    raw = yaml.safe_load(PAPER_TABLES.read_text())
    rows = {key: Row(key=key, **{**entry, "args": tuple(entry.get("args", ()))}) for key, entry in raw["rows"].items()}
    tables = {int(number): Table(number=int(number), **{**entry, "rows": tuple(entry["rows"])})
              for number, entry in raw["tables"].items()}
    for row in rows.values():
        assert row.items in ITEM_SIDES, f"{PAPER_TABLES}: row {row.key} has items {row.items!r}"
        assert row.id_model is None or rows[row.id_model].items == "none", f"{PAPER_TABLES}: row {row.key}"
    for table in tables.values():
        assert table.base in table.rows and set(table.rows) <= set(rows), f"{PAPER_TABLES}: table {table.number}"
        for figures in table.paper.values():
            assert set(figures) <= set(table.rows), f"{PAPER_TABLES}: table {table.number}"
    return rows, tables


def table(number: int) -> Table:
    """Paper table ``number``; a table the paper does not have is the user's mistake."""
    tables = paper_tables()[1]
    if number not in tables:
        raise SettingError(f"--table {number}: the paper's tables that molar reproduce knows are "
                           f"{', '.join(map(str, sorted(tables)))}")
    return tables[number]
