"""``wearable-synthetic``: per-device heart-rate, step and sleep streams with labelled anomalies.

For the mobile-health-monitoring use case. Each device's minute-by-minute stream is generated
from its own seed ``(seed, device)``, so any one device of thousands is produced alone and
cheaply (vectorised numpy, no per-minute Python loop). Labels per minute: normal, tachycardia
at rest (HR 115-145 while still), bradycardia (HR 32-42), and sensor dropout (HR flatlines at
its last value, no steps). Streams are cut into (channels × time) windows for ``cnn1d`` by the
same code the device uses (``edge_client.data.make_windows``), and a stream can be written as
the time-series CSV that ``edge_client.data.load_data`` reads.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge_client.data import make_windows
from tools.datasets.dataset import ClassLabels, Dataset, DatasetInfo, Samples

CHANNELS = ("hr", "steps", "sleep")
CLASSES = ("normal", "tachycardia_at_rest", "bradycardia", "dropout")
TACHYCARDIA, BRADYCARDIA, DROPOUT = 1, 2, 3
_START = np.datetime64("2024-01-01T00:00", "m")
_ACTIVITY_HR = np.array([0.0, 28.0, 65.0])  # HR above resting: still, walking, running
_ACTIVITY_STEPS = np.array([0.0, 95.0, 160.0])  # mean steps per minute


@dataclass(frozen=True)
class DeviceStream:
    """One device's stream, one row per minute.

    Attributes:
        device: device number.
        values: float32 (minutes, 3): HR in bpm (0.1 resolution), steps per minute, asleep 0/1.
        labels: int64 (minutes,): index into :data:`CLASSES`.
    """

    device: int
    values: Samples
    labels: ClassLabels


def _activity(rng: np.random.Generator, minutes: int) -> npt.NDArray[np.int64]:
    """Bouts of still / walking / running with geometric lengths (mean 15 min)."""
    n_bouts = minutes // 5 + 1
    lengths = rng.geometric(1 / 15, size=n_bouts)
    states = rng.choice(3, size=n_bouts, p=[0.88, 0.10, 0.02])
    return np.repeat(states, lengths)[:minutes].astype(np.int64)


def _smooth(signal: npt.NDArray[np.float64], tau: float) -> npt.NDArray[np.float64]:
    """Causal exponential smoothing: heart rate follows effort with a lag of ``tau`` minutes."""
    kernel = np.exp(-np.arange(int(5 * tau) + 1) / tau)
    padded = np.concatenate([np.full(len(kernel) - 1, signal[0]), signal])
    smoothed: npt.NDArray[np.float64] = np.convolve(padded, kernel / kernel.sum(), "valid")
    return smoothed


def _normal_day(rng: np.random.Generator, minutes: int) -> tuple[npt.NDArray[np.float64], ...]:
    resting = np.clip(rng.normal(64.0, 6.0), 48.0, 85.0)
    sleep_start, sleep_hours = rng.uniform(21.5, 24.5) * 60, rng.uniform(6.0, 8.5)
    asleep = ((np.arange(minutes) - sleep_start) % 1440) < sleep_hours * 60
    activity = np.where(asleep, 0, _activity(rng, minutes))
    steps = rng.poisson(_ACTIVITY_STEPS[activity]).astype(np.float64)
    effort = resting + _ACTIVITY_HR[activity] - 8.0 * asleep
    hr = _smooth(effort, 3.0) + _smooth(rng.normal(0.0, 4.0, minutes), 2.0)
    return hr, steps, asleep.astype(np.float64)


def _inject(rng: np.random.Generator, hr: npt.NDArray[np.float64],
            steps: npt.NDArray[np.float64], labels: ClassLabels, episodes: int) -> None:
    """Overwrite random episodes (20-60 min) with anomalies, in place."""
    for _ in range(episodes):
        kind = int(rng.integers(1, len(CLASSES)))
        length = int(rng.integers(20, 61))
        start = int(rng.integers(0, max(1, len(hr) - length)))
        span = slice(start, start + length)
        n = len(hr[span])
        if kind == TACHYCARDIA:
            hr[span], steps[span] = rng.uniform(115, 145) + rng.normal(0, 2, n), 0.0
        elif kind == BRADYCARDIA:
            hr[span] = rng.uniform(32, 42) + rng.normal(0, 1, n)
        else:
            hr[span], steps[span] = hr[max(start - 1, 0)], 0.0
        labels[span] = kind


def device_stream(seed: int, device: int, *, minutes: int = 1440,
                  episodes_per_day: float = 4.0) -> DeviceStream:
    """Generate one device's stream, independent of every other device's.

    Args:
        seed: dataset seed; with ``device`` it seeds this stream alone.
        device: device number (>= 0).
        minutes: stream length, one row per minute.
        episodes_per_day: mean number of anomaly episodes per 1440 minutes (Poisson).
    """
    rng = np.random.default_rng([seed, device])
    hr, steps, asleep = _normal_day(rng, minutes)
    labels = np.zeros(minutes, dtype=np.int64)
    _inject(rng, hr, steps, labels, int(rng.poisson(episodes_per_day * minutes / 1440)))
    values = np.stack([np.round(np.clip(hr, 30.0, 220.0), 1), steps, asleep], axis=1)
    return DeviceStream(device, values.astype(np.float32), labels)


def write_stream_csv(stream: DeviceStream, path: str | Path) -> None:
    """Write a stream as ``timestamp,hr,steps,sleep,label`` rows, readable by the device.

    Values are written exactly (HR to 0.1 bpm, steps and sleep as integers), so the CSV
    read back by ``edge_client.data.load_data`` gives the same arrays.
    """
    stamps = (_START + np.arange(len(stream.labels)).astype("timedelta64[m]")).astype(str)
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", *CHANNELS, "label"])
        for stamp, (hr, steps, asleep), label in zip(
                stamps, stream.values.tolist(), stream.labels.tolist(), strict=True):
            writer.writerow([stamp, f"{hr:.1f}", int(steps), int(asleep), label])


def _windows(streams: list[DeviceStream], window: int, stride: int,
             part: slice) -> tuple[Samples, ClassLabels, npt.NDArray[np.int64]]:
    cut = [make_windows(s.values[part], s.labels[part], window, stride) for s in streams]
    groups = [np.full(len(y), s.device, dtype=np.int64) for s, (_, y) in zip(streams, cut,
                                                                                strict=True)]
    labels = np.concatenate([y for _, y in cut]).astype(np.int64)
    return np.concatenate([x for x, _ in cut]), labels, np.concatenate(groups)


def load_wearable_synthetic(seed: int, *, n_devices: int = 20, minutes: int = 1440,
                            window: int = 30, stride: int | None = None,
                            test_fraction: float = 0.25,
                            episodes_per_day: float = 4.0) -> Dataset:
    """Generate ``n_devices`` streams and cut them into labelled windows.

    Each device's stream is split by time: the last ``test_fraction`` of its minutes is held
    out, so no window straddles train and test. A window's label is its majority minute label;
    ``stride`` defaults to ``window`` (no overlap).

    Returns:
        x (n, 3, window) float32, labels 0..3 (:data:`CLASSES`), groups = device number.
    """
    streams = [device_stream(seed, d, minutes=minutes, episodes_per_day=episodes_per_day)
               for d in range(n_devices)]
    stride = window if stride is None else stride
    split = round(minutes * (1 - test_fraction))
    x_train, y_train, g_train = _windows(streams, window, stride, slice(0, split))
    x_test, y_test, g_test = _windows(streams, window, stride, slice(split, minutes))
    info = DatasetInfo(
        name="wearable-synthetic", feature_names=CHANNELS, classes=CLASSES, model="cnn1d",
        input_shape=(len(CHANNELS), window), notes="synthetic per-device minute streams; "
        "natural partition = device; test = last part of each device's stream")
    return Dataset(x_train, y_train, x_test, y_test, info, g_train, g_test)
