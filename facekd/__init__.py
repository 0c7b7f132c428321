"""facekd: specialize a small face recognizer by distilling a face teacher on synthetic faces."""
from facekd.allocator import tune_allocator as _tune_allocator

__version__ = "0.2.0"

_tune_allocator()  # large CPU activations reuse the heap instead of fresh, page-faulting mmaps
