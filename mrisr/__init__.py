"""mrisr: super-resolution of MRI studies with SRCNN, geometry-exact from file to file."""

__version__ = "0.1.0"

__all__ = ["__version__"]
