"""The stages of a weak-supervision run, one module each with one `run(ctx, src, dst) -> dict`
(the contract is in pipeline/stage.py). `WEAK_STAGES` is what `coarse2fine run` and `coarse2fine compare` hand the
runner (`holdout` scores each round's network on held-out photos; `compare` adds the full reference:
stages/reference.py, stages/compare.py)."""
from pipeline.orchestration.runner import StageFunctions
from stages import coarse, compare, crf, evaluate, holdout, predict, reference, train

WEAK_STAGES = StageFunctions(coarse=coarse.run, crf=crf.run, train=train.run, predict=predict.run,
                             evaluate=evaluate.run, holdout=holdout.run, reference=reference.run, compare=compare.run)
