"""The stages of a weak-supervision run, one module each with one `run(ctx, src, dst) -> dict`
(the contract is in pipeline/stage.py). `WEAK_STAGES` is what `coarse2fine run` hands the runner."""
from pipeline.orchestration.runner import StageFunctions
from stages import coarse, crf, evaluate, predict, train

WEAK_STAGES = StageFunctions(coarse=coarse.run, crf=crf.run, train=train.run, predict=predict.run,
                             evaluate=evaluate.run)
