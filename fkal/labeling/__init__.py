"""Labeling rounds on the user's own images (``label_next.py``): which images to send to annotators next.

  project.py      the state folder: its paths, the project's settings (project.json), the image list and the
                  labeled set, and the defaults of each model
  annotations.py  annotations back: a ``path,label`` CSV or a Label Studio JSON export, checked against the project
  outputs.py      what a round writes for the annotators: to_label.csv, Label Studio tasks and labeling config,
                  the contact sheet
  rounds.py       one round (initial model, training, query, files) and the merge of annotations
  cli.py          the command line of ``label_next.py``

The data source itself (folders and CSVs of images, the decoded-image cache, the ``ALData`` of a round) is
``fkal.data.own_images``; the acquisitions are those of ``run.py`` (``fkal.acquisitions.registry``).
"""
