"""The ground floor: what every layer uses and that imports nothing of flatbench above it (names and
their registries, units of length, keyed randomness, 8-bit rounding, atomic files, directory layouts,
old names, and the command line's process settings: kernel paths and the heap)."""
