"""robodistill: distil big, slow or privileged teachers into small, fast robot students in simulation."""

__version__ = "0.1.0"
