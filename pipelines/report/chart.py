"""Pictures of utilization: assigned share per workspace over time, as PNG (matplotlib).

matplotlib (~0.5 s of CPU to import) is imported with the first picture (`report --html`),
not with this module: `report` without `--html` starts faster without it.
"""

import base64
import io
from collections.abc import Mapping

import pandas as pd

# Past this many lines their names would take more room than the plot: the legend is left out.
LEGEND_LIMIT = 12


def utilization_png(
    frame: pd.DataFrame,
    *,
    title: str,
    size: tuple[float, float],
    labels: Mapping[str, str] | None = None,
) -> bytes:
    """A line per workspace of assigned_share over day, named (`labels`, else its id) in a
    legend beside the plot when there are 2 to LEGEND_LIMIT of them. Ticks read as dates
    ("Dec 06")."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to memory only
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import PercentFormatter

    figure, axes = plt.subplots(figsize=size, dpi=90)
    for workspace_id, rows in frame.groupby("workspace_id", sort=True):
        label = (labels or {}).get(workspace_id, workspace_id)
        axes.plot(rows["day"], rows["assigned_share"], marker="o", label=label)
    axes.set_title(title, fontsize=10)
    axes.set_ylim(-0.02, 1.02)  # a share of 0 or 100% stays in sight
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("assigned share")
    axes.grid(alpha=0.3)
    if 1 < frame["workspace_id"].nunique() <= LEGEND_LIMIT:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    # Two days more on each side: even one day of data is ticked by date.
    days = pd.to_datetime(frame["day"])
    axes.set_xlim(days.min() - pd.Timedelta(days=2), days.max() + pd.Timedelta(days=2))
    locator = AutoDateLocator(minticks=3)
    axes.xaxis.set_major_locator(locator)
    formats = ["%Y", "%b", "%b %d", "%H:%M", "%H:%M", "%S.%f"]
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, formats=formats))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
