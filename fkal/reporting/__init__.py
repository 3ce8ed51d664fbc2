"""Reporting: what ``run_plot.py`` reads, computes, tabulates and draws, one job per module.

  records.py  read and validate ``results.jsonl`` lines (``RECORD_FIELDS``), filter and group them (``GroupKey``)
  curves.py   mean and std over runs per labeled count (``CurvePoint``), selection statistics, label saving
  tables.py   the accuracy and cost rows, and their Markdown and CSV text
  figures.py  matplotlib figures of all of the above (imported on its own: it needs matplotlib)
  names.py    configuration names and the paper's notation for legends

The names of the first four are re-exported here: ``from fkal import reporting as report``.
"""
from .names import (  # noqa: F401
    FULL_TRAIN, ACQUISITIONS, OURS, RANDOM_INIT_MARK, ConfigName, parse_config, acquisition_of, paper_notation,
    legend_name, format_ratio,
)
from .records import (  # noqa: F401
    DATASET_DIRS, DEFAULT_RARE_CLASSES, RECORD_FIELDS, FULL_TRAIN_FIELDS, METRICS, result_paths, read_results,
    parse_record, record_key, GroupKey, group_key, filter_records, group_records, display_order, split_full_train,
    imbalance_ratios_of, pool_size, pool_size_at, completeness_notes, group_label, baseline_key, rare_classes_in,
)
from .curves import (  # noqa: F401
    CurvePoint, mean_std, metric_value, accuracy_curve, improvement_curve, selection_entropy, entropy_curve, rare_share_curve,
    selection_histogram, num_classes_of, LabelSaving, is_baseline, labels_to_reach, label_saving,
)
from .tables import (  # noqa: F401
    SummaryRow, summary_table, CostRow, cost_table, format_accuracy_markdown, format_label_saving_markdown,
    format_cost_markdown, to_csv, ImprovementRow, improvement_table, format_improvement_markdown,
)
