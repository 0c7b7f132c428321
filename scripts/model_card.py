"""Print the model card of every registered network: parameters, FLOPs and CPU latency.

examples:
  python scripts/model_card.py
  python scripts/model_card.py 'students=[resnet18]' 'teachers=[sface]'
"""
from facekd.cli import run_script

if __name__ == "__main__":
    run_script("facekd.modelcard:print_model_cards", "model_card", __doc__)
