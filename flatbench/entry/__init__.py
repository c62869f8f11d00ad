"""The entry: the command lines (``flatbench``, its subcommands, ``flatbench-zoo``), Hydra's app, its
launchers and callbacks, and the config composed, checked and typed once into settings. The only layer
that imports hydra or omegaconf; everything below it takes typed settings."""
