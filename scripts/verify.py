"""Verify two photos: the same person or not, with the cosine similarity of their faces' embeddings.

Finds the largest face in each photo with MTCNN, embeds both with the run's embedder.onnx and compares them
with verify.threshold, or with the threshold of verify.gallery (which also names the embedder).

examples:
  python scripts/verify.py verify.model=runs/finetune/<name> 'verify.photos=[a.jpg,b.jpg]' verify.threshold=0.5
  python scripts/verify.py verify.gallery=runs/galleries/<name>.npz 'verify.photos=[a.jpg,b.jpg]'
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.verify:verify", "verify", __doc__)
