"""The command line of ``label_next.py``: ``select`` (make the next round), ``merge`` (annotations back) and
``status``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


from ..acquisitions.registry import argument_groups
from ..device import add_device_arguments, device_from_args
from ..errors import UserError
from ..models import MODELS
from .project import STATE_LAYOUT, Project, StatePaths, load_labeled
from .rounds import DEFAULT_ACQUISITION, DEFAULT_VAL_SHARE, RoundOptions, check_same, create_project, merge, \
    select_round

DESCRIPTION = """\
Label the next batch on your own images: pick the unlabeled images an annotator should label next, with the
acquisitions of run.py (default: the paper's pfk-phat, the practical Fisher kernel with pseudo-labels p^).

  python label_next.py select --state DIR --pool FOLDER_OR_CSV --labeled FOLDER_OR_CSV [--val FOLDER_OR_CSV]
      makes round 1 (the first call fixes the project's settings), then each later round after a merge;
      writes DIR/round{n}/ with to_label.csv, label_studio_tasks.json, label_studio_config.xml, contact_sheet.png
  python label_next.py merge --state DIR ANNOTATIONS.csv|LABEL_STUDIO_EXPORT.json
      adds the annotations of the last round to the labeled set (all of them, or none on the first bad line)
  python label_next.py status --state DIR
      the rounds so far and the size of the labeled set

Inputs: the pool is a folder of PNG/JPEG images (any nesting) or a CSV of paths; labeled images are a CSV
path,label or an ImageFolder tree (FOLDER/CLASS/IMAGE.png); labels are class names. A relative path in a CSV is
read from the CSV's folder. Every problem with an input ends with one 'error:' line and exit status 2."""

FILES = """\
Label Studio: make a project whose labeling config is round{n}/label_studio_config.xml (an Image and a Choices
tag 'label') and import round{n}/label_studio_tasks.json: one task per image (data.image, data.path, data.rank),
the pseudo-label as a prediction to accept or fix. The image URLs are Label Studio's local files: start it with
LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<label_studio_root of
round.json: --ls-root, default the folder above the pool's> and add to the project a Local files storage for
<label_studio_storage of round.json: the pool's folder> (Label Studio refuses a storage that is the root
itself); or write the images into the tasks with --ls-inline. Export the project as JSON (or JSON-MIN) and merge
the export. Without Label Studio: add a 'label' column to to_label.csv, or write path,label lines, and merge.

""" + STATE_LAYOUT

# Settings fixed by a project's first round (later rounds take them from project.json)
FIXED = ("pool", "labeled", "val", "val_share", "classes", "model", "layers", "image_size", "weights", "pretrain",
         "augment", "normalize", "acquisition", "epochs", "unsup_epochs", "batch_size", "lr", "seed")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the layout of the description and epilog, shows defaults except None ones."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, argparse.SUPPRESS) else super()._get_help_string(action)


def _option_dests() -> list[str]:
    p = argparse.ArgumentParser(add_help=False)
    for add in argument_groups():
        add(p)
    return [a.dest for a in p._actions]


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser; with ``suppress_defaults`` no option has a default, so parsing gives the options given."""
    p = argparse.ArgumentParser(prog="label_next.py", description=DESCRIPTION, epilog=FILES,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{select,merge,status}")

    s = sub.add_parser("select", help="make the next labeling round (round 1 creates the project)",
                       description=DESCRIPTION, epilog=FILES, formatter_class=HelpFormatter)
    s.add_argument("--state", required=True, help="the project's folder: all state lives there (see below)")
    g = s.add_argument_group("the images (fixed by the first round)")
    g.add_argument("--pool", help="the unlabeled images: a folder of PNG/JPEG files (any nesting) or a CSV of paths "
                                  "(a 'path' column, or one path per line)")
    g.add_argument("--labeled", help="labeled images that look like the data the model will meet: a CSV path,label or "
                                     "an ImageFolder tree FOLDER/CLASS/IMAGE; the model is trained on them")
    g.add_argument("--val", help="the validation set D_v, which stands for the target distribution (CSV path,label "
                                 "or an ImageFolder tree); default: a seeded share of --labeled (--val-share)")
    g.add_argument("--val-share", type=float,
                   help=f"share of each class of --labeled kept apart as D_v when --val is not given (default "
                        f"{DEFAULT_VAL_SHARE})")
    g.add_argument("--classes", help="comma-separated class names, when some class has no labeled image yet "
                                     "(default: the labels found, sorted)")
    g = s.add_argument_group("the model (fixed by the first round)")
    g.add_argument("--model", help=f"the project's {', '.join(MODELS)} or any "
                                   "torchvision classification architecture by name (resnet50, efficientnet_b0, "
                                   "torchvision:resnet18 for torchvision's own, "
                                   "vit_b_16, ...); default: lenet for grey images of at most 32 pixels, "
                                   "resnet18-small up to 64 pixels, else resnet18")
    g.add_argument("--layers", help="torchvision architectures: comma-separated layer names of the descriptors "
                                  "(graph nodes as torchvision.models.feature_extraction.get_graph_node_names lists "
                                  "them, or a module such as layer3); default: layer3,layer4 where the architecture "
                                  "has them, else the classifier's input")
    g.add_argument("--image-size", type=int, help="images are scaled and center-cropped to this side (default: 28 for "
                                                  "lenet, 32 for the -small ResNets, else 224)")
    g.add_argument("--weights", help="initial weights: a checkpoint file (a state dict), or torchvision's weights "
                                     "name (DEFAULT, IMAGENET1K_V1, ...; downloaded, so online only); default: "
                                     "rotation pretraining on the pool")
    g.add_argument("--pretrain", choices=("rotation", "weights", "none"),
                   help="initial model: rotation pretraining on the pool (default without --weights, once, cached), "
                        "--weights, or random weights")
    g.add_argument("--augment", choices=("none", "crop", "crop-flip"),
                   help="training augmentation: random crops (padding 1/8 of the side) and flips (default: none for "
                        "lenet, crop-flip otherwise)")
    g.add_argument("--normalize", choices=("pool", "imagenet"),
                   help="per-channel normalization: statistics of the pool, or ImageNet's (default with --weights)")
    g = s.add_argument_group("the acquisition and training (fixed by the first round)")
    g.add_argument("--acquisition", help=f"a configuration name as run.py takes them (random, pcc-L20, pfk-phat, "
                                         f"pfk-phat-L20, varR-K128, varR-E4-K32, coreset, vaal, tavaal, lloss, ...); "
                                         f"a Fisher-kernel name without L takes the model's default L (80 for "
                                         f"lenet, 768 for the ResNets); default {DEFAULT_ACQUISITION}")
    g.add_argument("--epochs", type=int, help="training epochs per round (default: the model's protocol, 50 for "
                                              "lenet, 35 otherwise)")
    g.add_argument("--unsup-epochs", type=int, help="rotation pretraining epochs (default 8 for lenet, 15 otherwise)")
    g.add_argument("--batch-size", type=int, help="training batch size (default 25 for lenet, 128 for the ResNets, "
                                                  "64 for other torchvision architectures)")
    g.add_argument("--lr", type=float, help="training learning rate (default 0.05 for lenet, 0.1 for the ResNets, "
                                            "0.01 for other torchvision architectures)")
    g.add_argument("--seed", type=int, help="seed of every random draw of the project (default 0)")
    for add in argument_groups():
        add(s)
    # a round's model has seen the labeled images before it queries, so uncertainty ranks from round 1 on
    s.set_defaults(uncertainty_first_random=0)
    g = s.add_argument_group("this round")
    g.add_argument("--budget", type=int, default=100, help="P, the number of images to label this round")
    add_device_arguments(g)             # --gpu, --allow-cpu-fallback, --nondeterministic (fkal.device)
    g.add_argument("--eval-batch", type=int, default=500, help="batch size of inference and descriptor passes")
    g.add_argument("--ls-root", default=None,
                   help="Label Studio's local-files document root that the image URLs are relative to (default: the "
                        "folder above the one that holds every pool image)")
    g.add_argument("--ls-inline", action="store_true",
                   help="write the images into the Label Studio tasks as data: URIs instead of local-files URLs")
    g.add_argument("--sheet-max", type=int, default=200, help="the most picks the contact sheet shows")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    m = sub.add_parser("merge", help="merge annotations (CSV path,label or a Label Studio JSON export) into the "
                                     "labeled set", description=DESCRIPTION, epilog=FILES,
                       formatter_class=HelpFormatter)
    m.add_argument("--state", required=True, help="the project's folder")
    m.add_argument("annotations", help="a CSV path,label (class names) or a Label Studio JSON / JSON-MIN export")

    t = sub.add_parser("status", help="the rounds so far", description=DESCRIPTION, epilog=FILES,
                       formatter_class=HelpFormatter)
    t.add_argument("--state", required=True, help="the project's folder")
    if suppress_defaults:
        for parser in (s, m, t):
            parser._defaults.clear()                          # (set_defaults above)
            for a in parser._actions:
                if a.dest not in ("help", "state", "annotations"):
                    a.default = argparse.SUPPRESS
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    try:
        if args.command == "select":
            return _select(args, given)
        if args.command == "merge":
            return _merge(args)
        return _status(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished steps are saved; run the same command again to resume", file=sys.stderr)
        return 130


def _project(paths: StatePaths) -> Project:
    if not paths.project.exists():
        raise UserError(f"{paths.root} holds no project: make round 1 with python label_next.py select --state "
                        f"{paths.root} --pool ... --labeled ...")
    return Project.load(paths.project)


def _select(args: argparse.Namespace, given: dict) -> int:
    paths = StatePaths(Path(args.state))
    device = device_from_args(args)     # once, before anything is written or touches CUDA
    dests = _option_dests()
    fixed = {k: v for k, v in given.items() if k in FIXED or k in dests}
    if paths.project.exists():
        project = Project.load(paths.project)
        check_same(project, fixed)
    else:
        project = create_project(paths, fixed, {d: getattr(args, d) for d in dests}, progress=not args.no_progress)
    if args.sheet_max < 1:
        raise UserError(f"--sheet-max {args.sheet_max}: show at least one image")
    opts = RoundOptions(budget=args.budget, device=device, eval_batch=args.eval_batch,
                        progress=not args.no_progress, ls_root=args.ls_root and str(Path(args.ls_root).resolve()),
                        ls_inline=args.ls_inline, sheet_max=args.sheet_max)
    rec = select_round(paths, project, opts)
    n = rec["round"]
    d = paths.round_dir(n)
    print(f"round {n}: {rec['budget']} images to label, picked by {rec['acquisition']} from {rec['unlabeled']} "
          f"unlabeled images (model {project.model} trained on {rec['labeled']} labeled images; "
          f"{rec['seconds']['round']:.1f} s)")
    print(f"  {d / 'to_label.csv'}              the list: rank, path, score, pseudo-label, probability")
    print(f"  {d / 'label_studio_tasks.json'}   Label Studio import (config: {d / 'label_studio_config.xml'})")
    print(f"  {d / 'contact_sheet.png'}         the picks with their pseudo-labels")
    print(f"then: python label_next.py merge --state {paths.root} ANNOTATIONS.csv|EXPORT.json")
    return 0


def _merge(args: argparse.Namespace) -> int:
    paths = StatePaths(Path(args.state))
    out = merge(paths, _project(paths), args.annotations)
    extra = f", {out['outside_picks']} outside them" if out["outside_picks"] else ""
    skipped = f"; {out['skipped']} image{'s' if out['skipped'] != 1 else ''} without a label skipped" \
        if out["skipped"] else ""
    print(f"merged {out['merged']} labels into round {out['round']} ({out['of_picks']} of its {out['picks']} picks"
          f"{extra}{skipped}); the labeled set holds {out['labeled']} images")
    print(f"next: python label_next.py select --state {paths.root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    paths = StatePaths(Path(args.state))
    project = _project(paths)
    labeled = load_labeled(paths.labeled)
    print(f"{paths.root}: {len(project.classes)} classes, model {project.model}, acquisition {project.acquisition}")
    print(f"  labeled set: {len(labeled)} images ({sum(lab.round == 0 for lab in labeled.values())} given)")
    for n in paths.complete_rounds():
        merged = sum(lab.round == n for lab in labeled.values())
        print(f"  round {n}: {paths.to_label(n)}; {merged} annotations merged")
    return 0
