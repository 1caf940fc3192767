"""What MLflow stores with a logged megl model and runs to load it (MLflow's "models from code":
the model is this code plus the exported folder, nothing pickled). Imported by MLflow only."""

from mlflow.models import set_model

from megl.models.mlflow_model import ExplainedClassifier

set_model(ExplainedClassifier())
