"""What ``from_torch`` rewrote, site by site: pattern, torch module path, channels moved."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RewriteRow:
    pattern: str
    """What was recognised: ``ecnn::shift2d``, ``pad-slice-cat``, ``slice-assign``, ``roll-index``,
    ``onehot-dwconv``, ``grid-sample``, ``torchshifts::shift2d``, ``fold-batch-norm``, ``shift-conv``..."""
    module_path: str
    """Torch module the site came from (``layer1.0.shift``; ``""`` is the model itself)."""
    channels_moved: int
    """Channels whose data moves (nonzero offset); 0 for rewrites that are not shifts."""
    result: str
    """What it became: ``shift2d``, ``sparse_shift2d``, ``active_shift2d``, ``shift_conv2d``, ``conv2d+bias``."""


@dataclass
class RewriteReport:
    rows: list[RewriteRow] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    """Relax var name -> torch module path, so that Relax passes can name their sites."""
    pt2e_float_ops: Counter = field(default_factory=Counter)
    """A PT2E program's ops the int8 fold kept in fp32 (op name -> count), as ``QuantizedModule.float_ops``."""

    def add(self, pattern: str, module_path: str, channels_moved: int, result: str) -> None:
        self.rows.append(RewriteRow(pattern, module_path, int(channels_moved), result))

    def on_rewrite(self, pattern: str, var, channels_moved: int, result: str) -> None:
        """The Relax passes' callback: the site is named after the torch module of ``var``."""
        self.add(pattern, self.origins.get(var.name, "?"), channels_moved, result)

    def counts(self) -> dict[str, int]:
        """Number of sites per pattern."""
        return dict(Counter(row.pattern for row in self.rows))

    def results(self) -> dict[str, int]:
        """Number of sites per resulting op."""
        return dict(Counter(row.result for row in self.rows))

    def __str__(self) -> str:
        if not self.rows:
            return "no rewrites"
        header = ("pattern", "module", "channels moved", "became")
        table = [header] + [(r.pattern, r.module_path or "<model>", str(r.channels_moved), r.result) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
        summary = ", ".join(f"{pattern}: {n}" for pattern, n in sorted(self.counts().items()))
        return "\n".join(lines + [f"total {len(self.rows)} ({summary})"])
