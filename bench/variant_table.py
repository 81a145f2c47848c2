"""Markdown table of a bundle's variants from its manifest: size, gate cosine and retrieval agreement.

    python bench/variant_table.py BUNDLE   (run `python -m converters validate BUNDLE` first)
"""

from __future__ import annotations

import sys

from edgeclip.bundle import Bundle


def variant_table(bundle: Bundle) -> str:
    rows = ["| tower | variant | size (bytes) | cosine mean | cosine worst 1 % | top-1 / top-5 agreement | gate |",
            "|---|---|---:|---:|---:|---|---|"]
    for tower in ("text", "vision"):
        spec = bundle.manifest.text if tower == "text" else bundle.manifest.vision
        for name, variant in sorted((spec.variants if spec else {}).items()):
            size = sum(f.size for f in variant.files)
            gate = variant.validation.get("gate")
            if gate is None:
                rows.append(f"| {tower} | {name} | {size:,} | (reference) | | | |")
                continue
            agreement = ", ".join(f"{d.replace('_to_', '→')} {v['top1']:.2f}/{v['top5']:.2f}" for d, v in gate["retrieval"].items())
            rows.append(f"| {tower} | {name} | {size:,} | {gate['cosine_mean']:.5f} | {gate['cosine_p1']:.5f} | {agreement} | "
                        f"{'pass' if gate['passed'] else 'FAIL'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(variant_table(Bundle.open(sys.argv[1])))
