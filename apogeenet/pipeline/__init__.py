"""The pipeline's stages, one module each, as ``dvc.yaml`` runs them (through the CLI) and the
Prefect flows call them: :mod:`.label`, :mod:`.validate`, :mod:`.train`, :mod:`.adapt`,
:mod:`.calibrate`, :mod:`.baselines`, :mod:`.evaluate`, :mod:`.predict`.

Each has one entry point, ``run(cfg, *, progress=False) -> StageResult``, that takes the resolved
:class:`~apogeenet.config.Params` and nothing else that could disagree with them: the CLI and the
flows turn every option into :meth:`~apogeenet.config.Params.with_overrides` first. A stage is
wiring: it reads its inputs, calls the library module that owns the work and returns a
:class:`~apogeenet.tracking.StageResult`; :func:`apogeenet.tracking.tracked` owns its MLflow run,
the logging and the registration, so no module here imports mlflow.
"""
