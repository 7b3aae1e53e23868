"""``lutra bench gemm``: PE utilization of whole GEMMs from RTL simulation cycle counts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Print cycles and utilization (useful MACs / (PEs x cycles)) per array size."""
    from gen.blocks import get_block
    from gen.cli_common import Parser, add_report_out, sizes, size_list
    from gen.config import validate_params
    from gen.outputs import report_files

    from .runner import available, run_cocotb

    parser = Parser(prog="lutra bench gemm", description=main.__doc__)
    parser.add_argument("--shape", default="64x256x64", type=lambda text: sizes(text, 3),
                        help="MxKxN (default 64x256x64)")
    parser.add_argument("--arrays", default="4x4,8x8", type=size_list,
                        help="comma-separated RxC arrays")
    parser.add_argument("--a-width", type=int, default=8, choices=(8, 16),
                        help="activation bits (default 8)")
    parser.add_argument("--out-width", type=int, default=8, choices=(8, 16),
                        help="requantized result bits (default 8)")
    parser.add_argument("--simulator", default=None, help="default: verilator if available")
    add_report_out(parser, "gemm_bench.json")
    args = parser.parse_args(argv)
    out = report_files(args.out, ["gemm_bench.json"], owner="bench-gemm", force=args.force)
    simulators = available()
    simulator = args.simulator or ("verilator" if "verilator" in simulators else simulators[0])
    shape = "x".join(map(str, args.shape))
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="lutra-bench-") as tmp:
        for rows, cols in args.arrays:
            array = f"{rows}x{cols}"
            config = validate_params(get_block("gemm"), {"rows": rows, "cols": cols,
                                                         "a_width": args.a_width,
                                                         "out_width": args.out_width})
            out_file = Path(tmp) / f"{array}.json"
            result = run_cocotb(config, simulator, build_root=Path(tmp), quiet=True,
                                tb_module="sim.tb.gemm_bench_tb",
                                extra_env={"LUTRA_BENCH_SHAPE": shape,
                                           "LUTRA_BENCH_OUT": str(out_file)})
            if not result.passed:
                print(f"gemm {array}: benchmark run failed (log: {result.build_dir}/test.log)")
                return 1
            rows_out.append(json.loads(out_file.read_text()))
    print(f"GEMM {shape} from {simulator} RTL simulation (sink always ready):")
    print(f"{'array':>6} {'cycles':>8} {'useful MACs':>12} {'PE-cycles':>10} {'utilization':>11}"
          f" {'input stalls':>12}")
    for r in rows_out:
        print(f"{r['array']:>6} {r['cycles']:>8} {r['useful_macs']:>12} {r['pe_cycles']:>10} "
              f"{100 * r['utilization']:>10.2f}% {r['input_stall_cycles']:>12}")
    with out:
        (out.stage / "gemm_bench.json").write_text(json.dumps(rows_out, indent=2) + "\n")
    return 0
