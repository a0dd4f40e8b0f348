"""vla-demo: show, teleoperate and improve Vision-Language-Action robot policies in a browser."""

__version__ = "0.1.0"
