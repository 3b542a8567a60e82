#!/usr/bin/env python3
"""Regenerates the reference files in Tests/StorageTests/Fixtures with the reference implementations.

- tfrecords_reference.bin: three records framed by TensorBoard's own RecordWriter
  (tensorboard.summary.writer.record_writer), payloads b"", b"hello tensorboard", bytes 0..299 mod 256.
- events_reference.tfevents: TensorBoard Event protos (tensorboard.compat.proto.event_pb2, encoded by
  the Python protobuf runtime) framed by the same RecordWriter. Fixed wall times, so the file is
  reproducible; the values are repeated in Tests/StorageTests/TensorBoardWriterTests.swift.
- trainer_state_reference.pb: a bertdist.TrainerState encoded by the Python protobuf runtime from the
  descriptor of proto/trainer_state.proto (obtained with protoc-c --descriptor_set_out); the values
  are repeated in Tests/StorageTests/TrainerStateTests.swift.

Usage: /work/venv/bin/python tools/make_storage_fixtures.py
Needs: tensorboard, protobuf (tools/requirements.txt) and protoc-c on PATH.
"""
import hashlib
import io
import os
import subprocess
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests", "StorageTests", "Fixtures")


def framed(payloads):
    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for payload in payloads:
        writer.write(payload)
    return buffer.getvalue()


def scalar_event(wall_time, step, scalars):
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars]
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=values))


def reference_events():
    # Float values are exact in float32 so that no decimal rounding differs between languages.
    return [
        event_pb2.Event(wall_time=1700000000.25, file_version="brain.Event:2"),
        scalar_event(1700000001.5, 1, [("train/loss", 1.375)]),
        scalar_event(1700000002.75, 10, [("train/lr", 3.0517578125e-05)]),
        scalar_event(1700000003.0, 10, [("eval/accuracy", 0.875), ("eval/loss", 0.4375)]),
        scalar_event(1700000004.125, 20, [("train/tokens_per_s", 12345.5), ("train/grad_norm", -0.0)]),
    ]


def trainer_state_class():
    with tempfile.TemporaryDirectory() as directory:
        descriptor_path = os.path.join(directory, "trainer_state.desc")
        subprocess.run(
            ["protoc-c", f"--descriptor_set_out={descriptor_path}", "trainer_state.proto"],
            cwd=os.path.join(ROOT, "proto"), check=True)
        with open(descriptor_path, "rb") as file:
            descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(file.read())
    pool = descriptor_pool.DescriptorPool()
    for file_descriptor in descriptor_set.file:
        pool.Add(file_descriptor)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bertdist.TrainerState"))


def reference_trainer_state():
    TrainerState = trainer_state_class()
    state = TrainerState(
        format_version=1, step=1500, epoch=2, samples_consumed_in_epoch=3072,
        total_steps=3750, warmup_steps=375, seed=42, world_size=4, shard_optimizer=True,
        parameter_count=22_713_604, current_learning_rate=1.2e-05,
        global_batch_size=32, micro_batch_size=4, max_sequence_length=128,
        train_data_fingerprint="sha256:5d41402abc4b2a76b9719d911017c592",
        created_unix_seconds=1700000123.5, bert_dist_version="0.1.0", end_marker=0x62657274)
    for rank in range(4):
        state.optimizer_shards.add(rank=rank, start=rank * 5_678_401, count=5_678_401)
    state.optimizer.kind = "adamw"
    state.optimizer.learning_rate = 2e-05
    state.optimizer.beta1 = 0.9
    state.optimizer.beta2 = 0.999
    state.optimizer.epsilon = 1e-08
    state.optimizer.weight_decay = 0.01
    state.optimizer.max_grad_norm = 1.0
    state.optimizer.schedule = "linear"
    state.recent_metrics.add(name="train/loss", value=0.3125, step=1500)
    state.recent_metrics.add(name="eval/accuracy", value=0.90625, step=1500)
    for name, contents in [("model.safetensors", b"model bytes"), ("config.json", b"{}")]:
        state.files.add(name=name, size_bytes=len(contents), sha256=hashlib.sha256(contents).digest())
    # The self-checksum: SHA-256 of the encoding without it.
    state.state_sha256 = hashlib.sha256(state.SerializeToString(deterministic=True)).digest()
    return state.SerializeToString(deterministic=True)


def write(name, data):
    path = os.path.join(FIXTURES, name)
    with open(path, "wb") as file:
        file.write(data)
    print(f"wrote {path} ({len(data)} bytes)")


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    write("tfrecords_reference.bin", framed([b"", b"hello tensorboard", bytes(i % 256 for i in range(300))]))
    write("events_reference.tfevents", framed([event.SerializeToString() for event in reference_events()]))
    write("trainer_state_reference.pb", reference_trainer_state())


if __name__ == "__main__":
    main()
