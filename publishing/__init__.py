"""Publishing a trained adapter: ZenML model versions, MLflow registered models, and the MLflow pyfunc model
that a registered version serves. Not steps (the register step calls it) and not the library: it imports
zenml and mlflow, which ``llm_trainer`` never does."""
