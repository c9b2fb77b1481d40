"""Reports of a run: per-sample figures, metric files, Markdown/HTML reports, paper comparison."""

from .figures import Picture, heatmap_overlay, save_heatmap_png, save_sample_images, to_uint8_image
from .paper import METRIC_KEYS, MODALITY_ROWS, PUBLISHED, format_reproduction_table, published_trd
from .report import SampleRow, metric_rows, write_metrics, write_report

__all__ = [
    "METRIC_KEYS",
    "MODALITY_ROWS",
    "PUBLISHED",
    "Picture",
    "SampleRow",
    "format_reproduction_table",
    "heatmap_overlay",
    "metric_rows",
    "published_trd",
    "save_heatmap_png",
    "save_sample_images",
    "to_uint8_image",
    "write_metrics",
    "write_report",
]
