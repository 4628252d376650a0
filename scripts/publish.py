#!/usr/bin/env python
"""Publish a trained student to the Hugging Face hub: check the folder, then upload it.

Examples:
  python scripts/publish.py runs/my_run/model --repo-id you/my-encoder --dry-run   # what would go up
  python scripts/publish.py runs/my_run/model --repo-id you/my-encoder             # upload (HF_TOKEN or --token)

The folder must be a saved model of this project (a run's model/): it loads as a SentenceTransformer,
it holds exactly the files a SentenceTransformer of its configuration consists of (what saving it
anew writes) plus its card and exported ONNX graphs, so a ``checkpoint.pt`` or any stray file copied in
is refused by name, ``--dry-run`` included; its card is this project's with a licence, and it names no
local path of this machine (the card of a run trained in ~/x names ``runs/...`` relative paths, never
``/home/you``). Training-only files (the trainer's listing, a lock, temp files) stay behind. A card
whose usage example does not load the repo id yet gets it, and its model-index is named after it
(``card.repo_id`` does both at training time). Exit 2 with one line on what to fix otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

LEFT_BEHIND = [".trainer_files.json", ".lock", "*.tmp-*"]


class PublishError(ValueError):
    """The folder is not ready to publish; the message says what to fix."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="the saved model folder (a run's model/)")
    parser.add_argument("--repo-id", required=True, help="hub repository, e.g. you/my-encoder")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="hub token (default: HF_TOKEN or the cached login)")
    parser.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded")
    return parser.parse_args(argv)


def files_to_upload(model: Path) -> list[Path]:
    """The folder's files that go up (relative paths), training-only ones left behind."""
    from fnmatch import fnmatch

    return sorted(p.relative_to(model) for p in model.rglob("*")
                  if p.is_file() and not any(fnmatch(p.name, pattern) for pattern in LEFT_BEHIND))


def check_folder(model: Path) -> None:
    """Raise PublishError naming the first thing that keeps ``model`` from being published."""
    from distill.model_card import card_header_of, is_project_card

    if not (model / "modules.json").is_file():
        hint = f"; its model is {model / 'model'}" if (model / "model" / "modules.json").is_file() else ""
        raise PublishError(f"{model} is not a saved SentenceTransformer (no modules.json){hint}")
    readme = model / "README.md"
    header = card_header_of(readme.read_text()) if readme.is_file() else {}
    if not is_project_card(header):
        raise PublishError(f"{readme} is not this project's model card; publish a model/ folder a training run wrote")
    if not header.get("license"):
        raise PublishError(f"{readme} names no licence: set card.license (e.g. apache-2.0) and retrain into the "
                           "same folder (it resumes and only rewrites the card), or add `license:` to its header")
    text = readme.read_text()
    for local in {str(Path.home()), str(Path.cwd().resolve()), "/tmp/"} - {"/"}:
        if local in text:
            raise PublishError(f"{readme} names the local path {local}: the card would show this machine's "
                               "folders; retrain with paths relative to the working directory")
    stray = sorted(set(files_to_upload(model)) - expected_files(model))
    if stray:
        shown = ", ".join(p.as_posix() for p in stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise PublishError(f"{model} holds files that are not part of the model ({shown}); move them out of the "
                           "folder before publishing")


def expected_files(model: Path) -> set[Path]:
    """What a SentenceTransformer of this folder's configuration consists of: the files saving it anew
    writes, its card, and the ONNX graphs ``scripts/export.py`` adds."""
    import tempfile

    from sentence_transformers import SentenceTransformer

    from distill.export import EXPORT_FILES

    try:
        encoder = SentenceTransformer(str(model), device="cpu")
    except (OSError, ValueError) as err:
        raise PublishError(f"{model} does not load as a SentenceTransformer ({str(err).splitlines()[0]})") from None
    with tempfile.TemporaryDirectory() as scratch:
        encoder.save(scratch)
        saved = {p.relative_to(scratch) for p in Path(scratch).rglob("*") if p.is_file()}
    return saved | {Path("README.md")} | {Path(name) for name in EXPORT_FILES.values()}


def set_repo_id(model: Path, repo_id: str) -> None:
    """Point the card's usage example at the repository (what ``card.repo_id`` does at training time)."""
    readme = model / "README.md"
    text = readme.read_text()
    updated = text.replace('SentenceTransformer("path/to/this/folder")', f'SentenceTransformer("{repo_id}")')
    updated = re.sub(r"(?m)^(model-index:\n- name: ).*$", lambda m: m.group(1) + repo_id, updated, count=1)
    if updated != text:
        from kdmcse_base.files import atomic_write

        atomic_write(readme, updated.encode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_folder(args.model)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files = files_to_upload(args.model)
    total = sum((args.model / f).stat().st_size for f in files)
    for file in files:
        print(f"{(args.model / file).stat().st_size:>12,}  {file.as_posix()}")
    print(f"{len(files)} files, {total / 2**20:.1f} MiB -> https://huggingface.co/{args.repo_id}"
          + (" (private)" if args.private else ""))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    set_repo_id(args.model, args.repo_id)
    from huggingface_hub import HfApi

    api = HfApi(token=args.token or os.environ.get("HF_TOKEN"))
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(args.model), repo_id=args.repo_id, ignore_patterns=LEFT_BEHIND,
                               commit_message="Upload sentence encoder distilled with kdmcse-distill")
    print(f"uploaded: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
