"""YAML pipelines: `vietnamese-ai pipeline run PIPELINE.yaml`, stages in order, resumable by stage.

`spec.py` reads and validates the file (references between stages, every stage's keys) before
anything runs; `run.py` plans (skip, resume or run, and why) and runs each stage through the same
recipe functions as the command line. The Vietnamese-named `RLHFPipeline` runs on `run.execute`.
"""

from vietnamese_ai.pipeline.run import execute, plan, run_pipeline
from vietnamese_ai.pipeline.spec import Pipeline, Stage, build_pipeline, load_pipeline

__all__ = ["Pipeline", "Stage", "build_pipeline", "execute", "load_pipeline", "plan", "run_pipeline"]
