#!/usr/bin/env python3
"""Reads a TensorBoard event directory with TensorBoard's own reader and prints its scalars.

Checks that what `bert-dist train --tensorboard DIR` writes is readable by TensorBoard:
every record must pass TensorBoard's CRC checks and every expected tag must be present.

Usage:
  /work/venv/bin/python tools/read_tensorboard.py DIR                  # expects the six bert-dist tags
  /work/venv/bin/python tools/read_tensorboard.py DIR --expect train/loss train/lr
  /work/venv/bin/python tools/read_tensorboard.py DIR --expect          # print only, expect nothing

Prints, per tag, one line per point: step, wall time, value. Exits 1 if an expected tag is
missing or a record is damaged, 2 if DIR holds no event file.
Needs: tensorboard (tools/requirements.txt).
"""
import argparse
import glob
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

DEFAULT_TAGS = ["train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/accuracy", "eval/loss"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="directory holding events.out.tfevents.* files")
    parser.add_argument("--expect", nargs="*", default=DEFAULT_TAGS, metavar="TAG",
                        help="scalar tags that must be present (default: %(default)s)")
    arguments = parser.parse_args()

    event_files = sorted(glob.glob(os.path.join(arguments.directory, "*tfevents*")))
    if not event_files:
        print(f"error: {arguments.directory}: no events.out.tfevents.* file", file=sys.stderr)
        return 2

    # size_guidance 0 keeps every point instead of TensorBoard's default reservoir sample.
    accumulator = event_accumulator.EventAccumulator(
        arguments.directory, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()

    # TensorBoard's reader skips a damaged record with a log message rather than failing, so
    # check the framing of every file here with its own record reader, which raises on a bad CRC.
    damaged = False
    for path in event_files:
        reader = PyRecordReader_New(path)
        records = 0
        while True:
            try:
                reader.GetNext()
                records += 1
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as error:
                print(f"error: {path}: record {records}: {error}", file=sys.stderr)
                damaged = True
                break
        print(f"{path}: {records} records")

    tags = accumulator.Tags()[event_accumulator.SCALARS]
    for tag in sorted(tags):
        points = accumulator.Scalars(tag)
        print(f"{tag}: {len(points)} points")
        for point in points:
            print(f"  step {point.step:>8}  wall_time {point.wall_time:.3f}  value {point.value:.8g}")

    missing = [tag for tag in arguments.expect if tag not in tags]
    if missing:
        print(f"error: {arguments.directory}: missing scalar tags: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing or damaged else 0


if __name__ == "__main__":
    sys.exit(main())
