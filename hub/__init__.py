"""hub: interoperability middleware between provincial one-stop systems and national e-government services."""

__version__ = "0.1.0"
