"""facekd: specialize a small face recognizer by distilling a face teacher on synthetic faces."""
__version__ = "0.1.0"
