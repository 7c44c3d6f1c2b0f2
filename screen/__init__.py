"""The fracture-screen command line and batch runner."""

__version__ = "0.1.0"
