"""Copy one picture of each kind the monitors log from a run's TensorBoard events into docs/pictures/.

The docs show these files, so they always come from the current code: `make docs-pictures` runs
the demo and then this script (``python docs/gen_pictures.py LOG_DIR``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

KINDS = {
    "saliency_overlays_signed.png": "xai/saliency/integrated_gradients/overlays",
    "saliency_overlays.png": "xai/saliency/grad_cam/overlays",
    "saliency_evolution_strip.png": "xai/saliency/grad_cam/evolution/00",
    "saliency_probe_table.png": "xai/saliency/probe_table",
    "metrics_table.png": "xai/metrics/table",
    "sanity_randomization.png": "xai/sanity/randomization",
    "tcav_summary.png": r"xai/tcav/[^/]+/summary",
    "tcav_history.png": r"xai/tcav/[^/]+/history",
    "tcav_table.png": "xai/tcav/table",
}


def main() -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "pictures")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    latest: dict[str, tuple[int, bytes]] = {}
    for events in sorted(args.log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags().get("images", []):
            for name, pattern in KINDS.items():
                if re.fullmatch(pattern, tag):
                    last = acc.Images(tag)[-1]
                    if name not in latest or last.step >= latest[name][0]:
                        latest[name] = (last.step, last.encoded_image_string)
    missing = sorted(set(KINDS) - set(latest))
    for name, (_, png) in latest.items():
        (args.out / name).write_bytes(png)
        print(f"wrote {args.out / name}")
    if missing:
        raise SystemExit(f"no image for {missing} under {args.log_dir}")


if __name__ == "__main__":
    main()
