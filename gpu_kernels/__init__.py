"""CUDA C kernel sources shipped with pyguts, one kernel family per ``.cu`` file."""
