"""The Python toolchain's proof: the smallest component it can build."""

from wit_world import exports


class Probe(exports.Probe):
    def answer(self) -> int:
        return 42
