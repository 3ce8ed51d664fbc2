"""A run's state on disk, by job:

  paths.py        RunPaths (the one place that names a run's files) and Cell (one configuration's run)
  run.py          Settings (the run-wide settings from the command line) and the seeds drawn from them
  checkpoints.py  saved models and iteration states read back and checked; an acquisition's task hooks
  resume.py       the settings every file and record carries, compared on resume; the split; results read back;
                  where a configuration resumes

``fkal.loop`` runs the iterations that write these files.
"""
