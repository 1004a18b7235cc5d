"""The shared base of every fewsam package: params, errors, atomic I/O, progress, CLI helpers,
volume and HDF5 types, device choice and the registry of random-stream keys.

Nothing here imports a stage package (synth, train, evaluate, phantom, pretrain) or the CLI, so
a worker process that needs `core.errors` loads nothing else of fewsam.
"""
