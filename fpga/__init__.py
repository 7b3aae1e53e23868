"""FPGA builds of Lutra blocks with the YoWASP Yosys / nextpnr tools from PyPI.

- :mod:`fpga.targets`: devices and boards with their resources.
- :mod:`fpga.fit`: the fit check run before synthesis.
- :mod:`fpga.ooc`: the out-of-context wrapper; :mod:`fpga.selftest`: the board self-test top.
- :mod:`fpga.flow`: ``build_ooc(config, target, out) -> report``; :mod:`fpga.report`: report
  parsing, ``gather(dir)`` and ``table(reports)``.
- :mod:`fpga.bench`: the largest configuration per target (``python -m fpga.bench``).

This package knows devices and tools, not block internals: what a block needs comes from its
``BlockSpec`` (signature, ``resources``, ``selftest``).
"""
