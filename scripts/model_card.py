"""Print the model card of every registered network: parameters, FLOPs and CPU latency in torch, and (unless
deployed=false) the latency of its deployed ONNX file in onnxruntime, fp32 and int8 (calibrated on synthetic faces).

examples:
  python scripts/model_card.py
  python scripts/model_card.py 'students=[resnet18]' 'teachers=[sface]'
  python scripts/model_card.py deployed=false          # torch figures only (no export, no quantization)
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.model_cards:print_model_cards", "model_card", __doc__)
