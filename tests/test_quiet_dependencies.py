"""Quiet by default: the dependencies' notices are silenced at their source, and real warnings stay."""

from __future__ import annotations

NOTICES = [  # (logger, message) as the dependencies log them
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: No module named "
                                      "'kernels'. Please make sure you already `pip install kernels`"),
    ("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker",
     "Failed to disable MLflow autologging for the following frameworks: ['fastai']."),
    ("zenml.pipelines.pipeline_definition", "You can visualize your pipeline runs in the `ZenML Dashboard`. In order "
                                            "to try it locally, please run `zenml login --local`."),
    ("zenml.orchestrators.step_run_utils", "Models can be viewed in the dashboard using ZenML Pro. Sign up for a free "
                                           "trial at https://www.zenml.io/pro/"),
]


def test_dependency_notices_are_silenced_at_their_source_and_real_warnings_stay(caplog, monkeypatch):
    import logging
    import warnings

    from runner.quiet import _DropMessages, quiet_dependencies

    def emit() -> list[str]:
        caplog.clear()
        for name, message in NOTICES:
            logging.getLogger(name).warning(message)
        logging.getLogger("zenml.pipelines.pipeline_definition").warning("a real ZenML warning stays")
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("`gradient_checkpointing_enable` is deprecated and will be removed in v6. Use "
                          "`activation_checkpointing_enable` instead.", FutureWarning)
        return [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]

    caplog.set_level(logging.INFO)
    for name in ["mlflow", *(n for n, _ in NOTICES)]:  # as before any CLI call in this session quietened them
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "filters", [f for f in logger.filters if not isinstance(f, _DropMessages)])
        monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr("os.environ", dict(__import__("os").environ))
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("always")  # a repeat from the same line shows too
        loud = emit()
        assert len(loud) == len(NOTICES) + 2  # every notice reaches the user without the quiet set-up
        quiet_dependencies()
        assert emit() == ["a real ZenML warning stays"]
    assert all(any(isinstance(f, _DropMessages) for f in logging.getLogger(n).filters) for n, _ in NOTICES)
