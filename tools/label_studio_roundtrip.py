"""One round trip through a real Label Studio server (outside CI): start it on 127.0.0.1 with a throwaway data
folder, make a project with the round's labeling config through the REST API, import the round's tasks file,
annotate every task but the last through the API (accepting the predicted label where it is right, fixing it
where it is wrong), export JSON and merge it with ``label_next.py merge``.

    python -m venv ls-venv && ls-venv/bin/pip install label-studio      # large; not in requirements.txt
    python tools/mnist_folders.py write --data-root ../shared/datasets --out demo --pool-size 600
    python label_next.py select --state demo_state --pool demo/pool --labeled demo/labeled --val demo/val --budget 20
    python tools/label_studio_roundtrip.py --label-studio ls-venv/bin/label-studio --state demo_state \
        --truth demo/pool_truth.csv

The right label of each image comes from --truth (a CSV path,label); without it every prediction is accepted.
Prints what happened at each step and exits 0 when the merged labels are exactly the submitted ones.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Api:
    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
                return (r.status, payload) if raw else json.loads(payload or b"null")
        except urllib.error.HTTPError as e:
            e.msg = f"{e.msg}: {e.read()[:500].decode(errors='replace')}"
            raise


def wait_for(base: str, proc: subprocess.Popen, seconds: float = 1200) -> None:
    start = time.time()
    while time.time() - start < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(2)
    raise RuntimeError(f"label-studio did not answer on {base} within {seconds:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label-studio", default=shutil.which("label-studio") or "label-studio",
                   help="the label-studio executable (e.g. ls-venv/bin/label-studio)")
    p.add_argument("--state", required=True, help="a label_next.py state folder with a complete round")
    p.add_argument("--round", type=int, default=None, help="the round (default: the last one)")
    p.add_argument("--truth", default=None, help="CSV path,label of the right labels (default: accept predictions)")
    p.add_argument("--port", type=int, default=8093)
    p.add_argument("--data-dir", default=None, help="Label Studio's data folder (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the data folder")
    args = p.parse_args(argv)

    state = Path(args.state).resolve()
    rounds = sorted(int(d.name[5:]) for d in state.glob("round*") if (d / "round.json").exists())
    n = args.round or rounds[-1]
    rdir = state / f"round{n}"
    record = json.loads((rdir / "round.json").read_text())
    root, storage_path = record["label_studio_root"], record.get("label_studio_storage")
    tasks = json.loads((rdir / "label_studio_tasks.json").read_text())
    truth = {}
    if args.truth:
        with open(args.truth, newline="") as f:
            truth = {r["path"]: r["label"] for r in csv.DictReader(f)}
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="ls-roundtrip-"))
    token = secrets.token_hex(20)
    base = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=root or "/", LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true")
    exe = Path(args.label_studio)
    if exe.parent.name == "bin" and (exe.parent / "python").exists():     # the version, from its environment
        version = subprocess.run([str(exe.parent / "python"), "-c", "import importlib.metadata as m; "
                                  "print(m.version('label-studio'), m.version('label-studio-sdk'))"],
                                 capture_output=True, text=True)
        print("label-studio, label-studio-sdk:", version.stdout.strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "w")
    proc = subprocess.Popen([args.label_studio, "start", "--no-browser", "--internal-host", "127.0.0.1",
                             "--port", str(args.port), "--data-dir", str(data_dir), "--username",
                             "annotator@example.com", "--password", secrets.token_hex(8), "--user-token", token,
                             "--enable-legacy-api-token"], stdout=log, stderr=subprocess.STDOUT, env=env)
    ok = False
    try:
        t0 = time.time()
        wait_for(base, proc)
        print(f"server up on {base} after {time.time() - t0:.0f} s (data folder {data_dir})")
        api = Api(base, token)
        project = api.call("POST", "/api/projects", {"title": f"{state.name} round {n}",
                                                     "label_config": (rdir / "label_studio_config.xml").read_text()})
        pid = project["id"]
        print(f"project {pid} created with label_studio_config.xml")
        if storage_path:
            storage = api.call("POST", "/api/storages/localfiles",
                               {"project": pid, "path": storage_path, "use_blob_urls": True, "title": "pool"})
            print(f"local files storage {storage['id']} for {storage_path} (document root {root})")
        imported = api.call("POST", f"/api/projects/{pid}/import", tasks)
        print(f"import of {len(tasks)} tasks: task_count={imported.get('task_count')} "
              f"prediction_count={imported.get('prediction_count')}")
        listing = api.call("GET", f"/api/tasks?project={pid}&page_size=100000")
        ls_tasks = listing["tasks"] if isinstance(listing, dict) else listing
        if root and ls_tasks:
            url = ls_tasks[0]["data"]["image"]
            try:
                status, body = api.call("GET", url, raw=True)
                print(f"image served by local files: GET {url} -> {status}, {len(body)} bytes")
            except urllib.error.HTTPError as e:
                print(f"image served by local files: GET {url} -> {e.code} (with the API token; a browser "
                      "session may differ)")
        accepted = fixed = 0
        submitted = {}
        for task in ls_tasks[:-1]:                                # the last task is left for later
            path = task["data"]["path"]
            full = api.call("GET", f"/api/tasks/{task['id']}")
            predicted = full["predictions"][0]["result"][0]["value"]["choices"][0] if full.get("predictions") else None
            label = truth.get(path, predicted)
            if label == predicted:
                accepted += 1
            else:
                fixed += 1
            api.call("POST", f"/api/tasks/{task['id']}/annotations",
                     {"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": [label]}}], "was_cancelled": False})
            submitted[path] = label
        print(f"annotated {len(submitted)} of {len(ls_tasks)} tasks through the API: {accepted} predictions "
              f"accepted, {fixed} fixed; 1 left unannotated")
        status, body = api.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true", raw=True)
        export = data_dir / f"export_round{n}.json"
        export.write_bytes(body)
        exported = json.loads(body)
        print(f"export: HTTP {status}, {len(exported)} tasks, "
              f"{sum(len(t.get('annotations') or []) for t in exported)} annotations -> {export}")
        merged = subprocess.run([sys.executable, str(ROOT / "label_next.py"), "merge", "--state", str(state),
                                 str(export)], capture_output=True, text=True)
        print(f"label_next.py merge: exit {merged.returncode}\n  " + (merged.stdout + merged.stderr).strip()
              .replace("\n", "\n  "))
        with open(state / "labeled.csv", newline="") as f:
            got = {r["path"]: r["label"] for r in csv.DictReader(f) if r["round"] == str(n)}
        ok = merged.returncode == 0 and got == submitted
        print(f"labeled.csv round {n}: {len(got)} labels, {'equal to' if got == submitted else 'NOT equal to'} "
              "the submitted ones")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if not args.keep and not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
