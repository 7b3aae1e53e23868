"""``lutra bench winograd``: accuracy of int8 Winograd convolution on real images, and the unit's
multiplications and cycle figures.

Trains the small CNN of ``sim.digits_cnn`` on ``load_digits`` (NumPy, fixed seed), quantizes it
to int8 and runs its two 3x3 convolutions as: direct int8; Winograd F2 and F4 in ``exact`` mode
(checked equal to direct, logit for logit); F4 ``tapwise`` (per-tap power-of-two scales
calibrated on 500 training images); and F4 with one scale per tensor (the naive baseline).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import digits_cnn
from .golden.winograd import multiplications_per_output

__all__ = ["main", "accuracy_table"]


def _multiplications_per_image(m: int | None) -> int:
    """Multiplications of the CNN's two convolutions for one 8x8 image."""
    total = 0
    for cin, cout in zip(digits_cnn.CHANNELS[:-1], digits_cnn.CHANNELS[1:]):
        if m is None:
            total += 8 * 8 * 9 * cin * cout
        else:
            tiles = (8 // m) ** 2                       # 8x8 outputs, padding 1
            total += tiles * (m + 2) ** 2 * cin * cout
    return total


def accuracy_table(*, epochs: int = 8, seed: int = 0, calibration: int = 500) -> list[dict]:
    """Rows of (name, test accuracy, multiplications) for every arithmetic variant."""
    data = digits_cnn.load(seed)
    model = digits_cnn.train(data, epochs=epochs, seed=seed)
    calib = data.x_train[:calibration]
    qmodel = digits_cnn.quantize_cnn(model, calib)

    def accuracy(logits):
        return float((logits.argmax(axis=1) == data.y_test).mean())

    direct = qmodel.forward(data.x_test, digits_cnn.direct_conv)
    rows = [
        {"name": "float32", "m": None, "logits": model.forward(data.x_test)},
        {"name": "int8 direct", "m": None, "logits": direct},
    ]
    for m in (2, 4):
        rows.append({"name": f"int8 F{m} exact", "m": m,
                     "logits": qmodel.forward(data.x_test, digits_cnn.winograd_conv(m, "exact"))})
    for per_tensor, name in ((False, "int8 F4 tapwise"), (True, "int8 F4 per-tensor")):
        shifts = digits_cnn.calibrate(qmodel, calib, m=4, per_tensor=per_tensor)
        rows.append({"name": name, "m": 4, "logits": qmodel.forward(
            data.x_test, digits_cnn.winograd_conv(4, "tapwise", shifts))})
    for row in rows:
        row["accuracy"] = accuracy(row["logits"])
        row["same_as_direct"] = bool(np.array_equal(row["logits"], direct))
        row["mults_per_output"] = multiplications_per_output(row["m"])
        row["mults_per_image"] = _multiplications_per_image(row["m"])
        row["test_images"] = len(data.y_test)
    return rows


def _hardware_rows() -> list[tuple]:
    from hw.winograd import WinogradParams
    rows = []
    for kw in ({"m": 2}, {"m": 4}, {"m": 4, "taps_per_clock": 9}, {"m": 4, "taps_per_clock": 4},
               {"m": 4, "taps_per_clock": 1}):
        for mode in ("exact", "tapwise"):
            unit = WinogradParams(mode=mode, in_channels=16, **kw)
            rows.append((f"F{unit.m} {mode}", unit.taps_per_clock, unit.multipliers,
                         unit.cycles_per_beat, unit.latency, unit.input_width,
                         unit.weight_width, unit.accumulator_width))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lutra bench winograd", description=__doc__)
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="data split / training seed")
    args = parser.parse_args(argv)
    start = time.time()
    rows = accuracy_table(epochs=args.epochs, seed=args.seed)
    print(f"CNN on sklearn load_digits (conv3x3 1->8, conv3x3 8->16, pool, dense), "
          f"{rows[0]['test_images']} test images, seed {args.seed}, {args.epochs} epochs")
    print(f"{'arithmetic':<20} {'accuracy':>9} {'= direct':>9} {'mult/out/ch':>12} "
          f"{'mult/image':>11}")
    for row in rows:
        same = "-" if row["name"] == "float32" else ("yes" if row["same_as_direct"] else "no")
        print(f"{row['name']:<20} {100 * row['accuracy']:>8.2f}% {same:>9} "
              f"{str(row['mults_per_output']):>12} {row['mults_per_image']:>11}")
    print("mult/out/ch: multiplications per output pixel per input channel (direct 9, "
          "F2 16/4, F4 36/16); mult/image: both convolutions, one 8x8 image")
    print()
    print("Unit figures (in_channels 16): Winograd multipliers = taps_per_clock; total adds the "
          "requantizer's 4 per output lane (out_lanes = m)")
    print(f"{'config':<12} {'taps/clk':>8} {'mults':>6} {'clk/beat':>8} {'latency':>8} "
          f"{'V bits':>6} {'U bits':>6} {'acc bits':>8}")
    for name, taps, mults, cpb, lat, vw, uw, aw in _hardware_rows():
        print(f"{name:<12} {taps:>8} {mults:>6} {cpb:>8} {lat:>8} {vw:>6} {uw:>6} {aw:>8}")
    print()
    print("Feature-map unit (lutra generate winograd_fm): tiler -> unit -> untiler, one int8 "
          "in and one value out per beat; clocks per tile-channel beat = max(m + 2, clk/beat)")
    print("FPGA resources and Fmax (README table): one `lutra build winograd --m M "
          "[--taps-per-clock T --out-lanes 1] --target ecp5-85f|ice40-up5k --out DIR` per "
          "row, then `lutra report DIR...` prints them")
    print(f"\n(bench time {time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
