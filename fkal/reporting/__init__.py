"""Reporting: what ``run_plot.py`` reads, computes, tabulates and draws, one job per module.

  records.py  read and validate ``results.jsonl`` lines (``RECORD_FIELDS``), filter and group them (``GroupKey``)
  curves.py   mean and std over runs per labeled count (``CurvePoint``), selection statistics, label saving on
              mean curves against every baseline with bootstrap intervals over runs (``label_saving``), and against
              the pointwise best of all other configurations (``saving_vs_best``)
  tables.py   the accuracy and cost rows, and their Markdown and CSV text
  figures.py  matplotlib figures of all of the above (imported on its own: it needs matplotlib)
  names.py    configuration names and the paper's notation for legends
  html.py     one self-contained HTML page of a results folder (``run_plot.py --html``)
  cli.py      the command line of ``run_plot.py``

The names of the first four are re-exported here: ``from fkal import reporting as report``.
"""
from .names import (  # noqa: F401
    FULL_TRAIN, ACQUISITIONS, OURS, RANDOM_INIT_MARK, ConfigName, parse_config, acquisition_of, paper_notation,
    legend_name, format_ratio,
)
from .records import (  # noqa: F401
    DATASET_DIRS, DEFAULT_RARE_CLASSES, RECORD_FIELDS, FULL_TRAIN_FIELDS, METRICS, LOWER_IS_BETTER, EPOCH_SELECTIONS,
    result_paths, read_results, parse_record, record_key, GroupKey, group_key, epoch_selection_of, filter_records,
    records_with, group_records, display_order, split_full_train, imbalance_ratios_of, pool_size, pool_size_at,
    dataset_size, dataset_size_at,
    completeness_notes, group_label, baseline_key, rare_classes_in,
)
from .curves import (  # noqa: F401
    CurvePoint, mean_std, metric_value, accuracy_curve, difference_curve, improvement_curve, selection_entropy,
    entropy_curve, rare_share_curve, selection_histogram, num_classes_of, FINAL, RESAMPLES, LabelSaving, RunMatrix,
    is_baseline, labels_to_reach, labels_to_reach_rows, run_matrix, mean_rows, percentile_interval, parse_target,
    label_saving, saving_vs_best, saving_vs_best_table,
)
from .tables import (  # noqa: F401
    SummaryRow, summary_table, CostRow, cost_table, format_accuracy_markdown, label_saving_text,
    format_label_saving_markdown, difference_table, format_cost_markdown,
    to_csv, ImprovementRow, improvement_table, format_improvement_markdown, COMPARISON_METRICS, ComparisonRow,
    comparison_table, format_comparison_markdown,
)
