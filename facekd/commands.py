"""The ``facekd`` command: ``facekd <command> [key=value ...]``, one entry per stage and tool, from any folder.

:data:`COMMANDS` is the one table of what each command runs (``"module:function"``), on which config, and its
``--help`` text; ``scripts/<name>.py`` runs the same entry (:func:`run`), so both spellings behave alike.
"""
from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Sequence

from facekd.cli import run_script

__all__ = ["Command", "COMMANDS", "run", "main"]


@dataclass(frozen=True)
class Command:
    """One command: the function it runs, the primary config it composes, the script beside it, its help text."""

    target: str
    config: str
    script: str
    doc: str


COMMANDS: dict[str, Command] = {
    "generate": Command("facekd.generators:generate", "generate", "generate.py", """\
Stage 1: generate unlabeled synthetic faces.

Draws reproducible faces from a pretrained generator (by default the embedded DCGAN) and writes them
as shards under <paths.root>/generate/<generate.name>, with a manifest recording every shard's checksum.
Face j of a run is the same on every machine for the same seed.

examples:
  facekd generate                               # the embedded DCGAN, a CPU-demo size
  facekd generate generate.num_images=102400    # the paper's size
  facekd generate profile=smoke                 # toy size, for a quick check
"""),
    "distill": Command("facekd.distill.stage:distill", "distill", "distill.py", """\
Stage 2: distill the teacher's features into a small student, without labels.

Reads a generate run (and, if configured, unlabeled views of the train photos), caches the teacher's
features on them, and trains the student to reproduce them (sigmoid-BCE, MSE or cosine; optionally
several named feature maps). Writes <paths.root>/distill/<student>-<loss>-<teacher>/ with
student.safetensors, per-epoch metrics (R^2 against the teacher) and plots.

examples:
  facekd distill loss=bce                   # label-free sigmoid-BCE, the recommended recipe (default)
  facekd distill recipe=paper               # the paper's recipe: synthetic faces and unlabeled train views only
  facekd distill student=convnet9 loss=mse
  facekd distill distill.taps.weight=1      # add multi-layer (SKD) targets
  facekd distill resume=true                # continue an interrupted run
"""),
    "finetune": Command("facekd.finetune:finetune", "finetune", "finetune.py", """\
Stage 3: specialize the distilled student on a few labeled photos per person.

With recipe=recommended (the default) fine-tunes the whole distilled student gently on the labeled train
split; with recipe=paper trains a linear head on the frozen student. Selects on val, scores test once, and
writes <paths.root>/finetune/<name>/ with metrics, plots and the deployable model.onnx and embedder.onnx
(checked against the torch model).

examples:
  facekd finetune                                  # ORL, the default distill run
  facekd finetune data=folder data.root=/my/photos # your own photos, one folder per person
  facekd finetune finetune.unfreeze=true           # also train the student at a lower lr
"""),
    "specialize": Command("facekd.jobs:specialize", "specialize", "specialize.py", """\
A face model for your own people, in one command.

DIR holds one sub-folder of raw photos per person (any size; the sub-folder's name is the person's name).
Each person needs at least data.per_class + data.val + 1 photos with a face (5 + 1 + 1 by default): fewer,
and the person is left out with a warning; at least 2 people must remain. The faces are found and aligned
with MTCNN, synthetic faces are generated, the teacher is distilled into a small student, and the student
is specialized on your photos (data.per_class per person to train, data.val to choose, the rest to test)
with the recipe: recommended (default; the whole student fine-tuned) or paper (a linear head on the frozen
student: faster, less accurate on ORL). It prints the accuracy on your held-out photos and the model folder
(<paths.root>/finetune/<name>-<recipe>-<split hash>). A rerun after the folder changes makes a new model;
a rerun without a change reuses every stage.

examples:
  facekd specialize data.root=DIR
  facekd specialize data.root=DIR data.per_class=3 paths.root=runs/mine
  facekd specialize data.root=DIR data.unknown_identities=4   # also calibrate "unknown"
  facekd specialize data.root=DIR recipe=paper                # the paper's recipe
then:
  facekd identify identify.model=RUN identify.input=new_photo.jpg
"""),
    "enroll": Command("facekd.enroll:enroll", "enroll", "enroll.py", """\
Enroll people into a gallery, with no training: add, remove or list them.

Reads a folder with one sub-folder of photos per person (the sub-folder's name is the person's name), finds the
face in each photo with MTCNN, embeds it with the run's embedder.onnx and writes the gallery file (atomically,
with its checksum and the embedder's sha256).  The rejection threshold is calibrated again after every change,
on synthetic faces and leave-one-person-out among the enrolled photos, never on real strangers.  A name that
is already enrolled is refused unless enroll.on_exists=merge (add the photos) or replace.

examples:
  facekd enroll enroll.model=runs/finetune/<name> enroll.people=~/people
  facekd enroll enroll.model=RUN enroll.people=new_people/ enroll.on_exists=merge
  facekd enroll enroll.gallery=runs/galleries/<name>.npz 'enroll.remove=[alice]'
  facekd enroll enroll.gallery=runs/galleries/<name>.npz enroll.list=true
"""),
    "identify": Command("facekd.identify:identify", "identify", "identify.py", """\
Name the people in photos with a specialized model (a finished finetune run).

Finds every face in the photos (any size, any number of faces) with MTCNN, frames each one as the run's
training images were framed, and runs the run's model.onnx (or its torch model with identify.backend=torch).
Writes identities.csv (one row per face: file, box, identity, score, known/unknown; no_face and unreadable
rows for the rest) and contact_sheet.png to <paths.root>/identify/<run name>-<time>/.  A run with an
open_set.json rejects faces scoring below its threshold as unknown; a closed-set run rejects none.

examples:
  facekd identify identify.model=runs/finetune/orl-resnet18-bce-sface-bce identify.input=photos/
  facekd identify identify.model=RUN 'identify.input=[group.jpg,more/]' identify.backend=torch
  facekd identify identify.model=RUN identify.input=photos/ identify.on_corrupt=skip identify.out_dir=out/
"""),
    "verify": Command("facekd.verify:verify", "verify", "verify.py", """\
Verify two photos: the same person or not, with the cosine similarity of their faces' embeddings.

Finds the largest face in each photo with MTCNN, embeds both with the run's embedder.onnx and compares them
with verify.threshold, or with the threshold of verify.gallery (which also names the embedder).

examples:
  facekd verify verify.model=runs/finetune/<name> 'verify.photos=[a.jpg,b.jpg]' verify.threshold=0.5
  facekd verify verify.gallery=runs/galleries/<name>.npz 'verify.photos=[a.jpg,b.jpg]'
"""),
    "demo": Command("facekd.jobs:main_job", "demo", "demo.py", """\
The main job (make demo): the whole method on the embedded defaults, in one table.

Generates synthetic faces, distills the teacher into a ResNet-18, specializes it on ORL (2 train /
1 val / 7 test photos per person) with the paper's recipe and with facekd's recommended one (the rows
recipe=paper and recipe=recommended run exactly as the stages do), and sets
them beside the teacher's linear probe, a ResNet-18 trained from scratch and raw pixels under the same
split. Every row is cached, so a rerun redoes only what changed.

examples:
  facekd demo                 # 13.7 min on 2 CPU cores with native bf16 (first run, assets cached)
  facekd demo profile=smoke   # toy sizes: checks the plumbing, the numbers mean nothing
  facekd demo seeds=3         # mean +- std over three seeds
"""),
    "compare": Command("facekd.baselines.compare:compare_baselines", "compare_baselines", "compare_baselines.py", """\
Compare every method under one split and the same seeds, as one table.

Runs scratch, teacher_probe, Hinton KD, triplet, MAML, the feature-distillation rows and the multi-layer
(SKD / FitNet / AT) rows on the same labeled split, selects each on val, scores test once, and writes
comparison.md / .csv, results.json and accuracy.png to out_dir. Each row is cached under
<paths.root>/baselines/<method>-<hash>/ and reused while its config, data, split and seed are unchanged.

examples:
  facekd compare                                  # the embedded ORL defaults
  facekd compare seeds=3 'methods=[pixels,teacher_probe,scratch]'
  facekd compare baselines.scratch.train.steps=1000   # reruns only that row
"""),
    "model-card": Command("facekd.model_cards:print_model_cards", "model_card", "model_card.py", """\
Print the model card of every registered network: parameters, FLOPs and CPU latency in torch, and (unless
deployed=false) the latency of its deployed ONNX file in onnxruntime, fp32 and int8 (calibrated on synthetic faces).

examples:
  facekd model-card
  facekd model-card 'students=[resnet18]' 'teachers=[sface]'
  facekd model-card deployed=false          # torch figures only (no export, no quantization)
"""),
    "probe-teacher": Command("facekd.probe:probe_teacher", "probe_teacher", "probe_teacher.py", """\
Is the teacher a face teacher? Few-shot ORL probes on its features.

Fits a linear probe and a nearest-class-mean classifier on the teacher's features over several split
seeds, beside the same probes on a random-init student's features, and prints the table.

examples:
  facekd probe-teacher
  facekd probe-teacher teacher=facenet_vggface2 teacher.weights=/path/to/weights.pt
"""),
    "scale-curve": Command("facekd.scale_curve:scale_curve", "scale_curve", "scale_curve.py", """\
The distilled student's quality against the number of synthetic faces it saw.

For each count in curve.faces, the distill_bce_probe row is distilled in stream mode (new generator faces
every step, the teacher online) for curve.epochs epochs that together show the student that many faces,
then finetuned and scored under the shared split. Writes curve.csv, curve.json and curve.png (R² on the
real val/test photos and held-out synthetic faces, and test accuracy, against faces seen) to curve.out_dir.
Every point and seed is cached, so adding a point reruns only that point.

examples:
  facekd scale-curve 'curve.faces=[2000,8000]' seeds=3
  facekd scale-curve 'curve.faces=[100000,1000000]' device=cuda curve.epochs=21
  facekd scale-curve 'curve.overrides=["distill.sources.labeled_train.weight=0"]'   # synthetic faces only
"""),
}


def run(name: str, argv: Sequence[str] | None = None, command: str | None = None) -> None:
    """Run command ``name`` with ``argv`` (default: the process's arguments), as ``command`` in messages."""
    c = COMMANDS[name]
    run_script(c.target, c.config, c.doc, argv, command=command or f"python scripts/{c.script}")


def _usage() -> str:
    lines = ["usage: facekd <command> [key=value ...] [group=option ...]   (facekd <command> --help for its keys)", "",
             "commands:"]
    for name, c in COMMANDS.items():
        lines.append(f"  {name:<14} {textwrap.shorten(c.doc.strip().splitlines()[0], 96, placeholder=' ...')}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The installed ``facekd`` entry point (``[project.scripts]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    name = args[0].replace("_", "-")
    name = {"compare-baselines": "compare"}.get(name, name)
    if name not in COMMANDS:
        print(f"facekd: error: unknown command '{args[0]}'; the commands are: {', '.join(COMMANDS)}. "
              "`facekd --help` says what each does.", file=sys.stderr)
        raise SystemExit(2)
    run(name, args[1:], command=f"facekd {name}")


if __name__ == "__main__":
    main()
