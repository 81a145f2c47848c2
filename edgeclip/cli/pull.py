"""`edgeclip pull REPO_ID[@REVISION] --out DIR`: a bundle from the Hugging Face Hub, only the towers and variants needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import comma_list, tower_list


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("pull", help="download a bundle from the Hugging Face Hub: the manifest, then only what is needed",
                       description="Files go through huggingface_hub's cache (HF_HUB_OFFLINE=1 pulls from it, "
                                   "HF_ENDPOINT picks a mirror) and are checked against the manifest's sha256.")
    p.add_argument("ref", metavar="REPO_ID[@REVISION]", help="e.g. edgeclip/jina-clip-v2-int8 or owner/name@v1.0")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    p.add_argument("--towers", type=tower_list, help="comma-separated: text, vision (default: every tower the bundle has)")
    p.add_argument("--variant", type=comma_list(), action="extend", metavar="NAME",
                   help="variants to fetch, comma-separated or repeated (default: the one edgeclip picks on this CPU)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import Bundle
    from ..hub import pull

    out = pull(args.ref, args.out, towers=args.towers, variants=args.variant,
               progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    bundle = Bundle.open(out)
    pulled = [f for f in bundle.all_files() if bundle.path(f.path).is_file()]
    size = sum(f.size for f in pulled)
    print(f"pulled {len(pulled)} files ({size / 1e6:.1f} MB) into {out}; `edgeclip info {out}` describes it", file=sys.stderr)
    return 0
